//! SQL for the seller profile. Every statement also filters `tenant_id` explicitly.

use super::model::{ProfileInput, SellerProfile};
use crate::commerce::to_json;
use crate::db::{DbError, TenantDb};
use crate::monitoring::activity::{Change, Recorder};

/// The profile, if one was saved (by key, on a read lane).
pub async fn get(db: &TenantDb) -> Result<Option<SellerProfile>, DbError> {
    db.read_opt(
        &format!(
            "SELECT {} FROM seller_profiles WHERE tenant_id = $1",
            SellerProfile::COLUMNS
        ),
        &[&db.tenant_id()],
    )
    .await?
    .map(|row| SellerProfile::from_row(&row))
    .transpose()
}

/// Saves the profile, with its activity (the tenant is its resource id), in one pooled
/// transaction.
pub async fn put(
    db: &TenantDb,
    activity: &Recorder,
    input: &ProfileInput,
) -> Result<SellerProfile, DbError> {
    let social = to_json(&input.social_handles)?;
    let address = to_json(&input.business_address)?;
    let tx = db.begin().await?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO seller_profiles AS p (tenant_id, store_name, slug, bio, logo_url,
                     banner_url, contact_email, contact_phone, social_handles, business_address)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (tenant_id) DO UPDATE SET
                     store_name = EXCLUDED.store_name, slug = EXCLUDED.slug, bio = EXCLUDED.bio,
                     logo_url = EXCLUDED.logo_url, banner_url = EXCLUDED.banner_url,
                     contact_email = EXCLUDED.contact_email,
                     contact_phone = EXCLUDED.contact_phone,
                     social_handles = EXCLUDED.social_handles,
                     business_address = EXCLUDED.business_address, updated_at = now()
                 WHERE p.tenant_id = $1
                 RETURNING {}",
                SellerProfile::COLUMNS
            ),
            &[
                &tx.tenant_id(),
                &input.store_name,
                &input.slug.as_str(),
                &input.bio,
                &input.logo_url,
                &input.banner_url,
                &input.contact_email.as_ref().map(|e| e.as_str()),
                &input.contact_phone.as_ref().map(|p| p.as_str()),
                &social,
                &address,
            ],
        )
        .await?;
    let profile = SellerProfile::from_row(&row)?;
    let change = Change::new("seller_profile.updated", "seller_profile", tx.tenant_id());
    activity.commit(tx, change).await?;
    Ok(profile)
}
