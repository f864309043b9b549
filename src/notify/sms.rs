//! SMS through Twilio's Messages API: a form POST with basic auth to
//! `{TWILIO_API_BASE_URL}/2010-04-01/Accounts/{sid}/Messages.json`, with a status callback
//! that names the delivery (`webhook`).

use std::time::Duration;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::outbox::SendError;
use super::webhook::PATH;
use crate::config::TwilioConfig;

pub struct Sms {
    http: reqwest::Client,
    messages_url: String,
    account_sid: String,
    auth_token: SecretString,
    from: String,
    /// `PUBLIC_BASE_URL` without its trailing slash; no callbacks without it.
    callback_base: Option<String>,
}

/// The callback URL of a delivery: the webhook, with the tenant and delivery it is about
/// (Twilio signs the whole URL, so neither can be changed).
pub fn callback_url(base: &str, tenant: Uuid, delivery: Uuid) -> String {
    format!("{base}{PATH}?tenant_id={tenant}&delivery_id={delivery}")
}

impl Sms {
    pub fn new(config: &TwilioConfig, public_base_url: Option<&url::Url>) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(config.timeout).build()?,
            messages_url: format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                config.api_base.as_str().trim_end_matches('/'),
                config.account_sid
            ),
            account_sid: config.account_sid.clone(),
            auth_token: config.auth_token.clone(),
            from: config.from_number.clone(),
            callback_base: public_base_url.map(|u| u.as_str().trim_end_matches('/').to_string()),
        })
    }

    /// Sends `text` to `to`; Twilio's message sid once it answered 2xx (whatever `status` it
    /// reports).
    pub async fn send(
        &self,
        tenant: Uuid,
        delivery: Uuid,
        to: &str,
        text: &str,
    ) -> Result<String, SendError> {
        let mut form = vec![
            ("To", to.to_string()),
            ("From", self.from.clone()),
            ("Body", text.to_string()),
        ];
        if let Some(base) = &self.callback_base {
            form.push(("StatusCallback", callback_url(base, tenant, delivery)));
        }
        let response = self
            .http
            .post(&self.messages_url)
            .basic_auth(&self.account_sid, Some(self.auth_token.expose_secret()))
            .form(&form)
            .send()
            .await
            .map_err(|e| SendError::Transient {
                error: if e.is_timeout() {
                    "Twilio: no answer in time".to_string()
                } else {
                    format!("Twilio: {e}")
                },
                after: None,
            })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        if status.is_success() {
            return Ok(body["sid"].as_str().unwrap_or_default().to_string());
        }
        let error = format!(
            "Twilio {}: {} {}",
            status.as_u16(),
            body["code"],
            body["message"].as_str().unwrap_or("")
        );
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            Err(SendError::Transient {
                error,
                after: retry_after,
            })
        } else {
            Err(SendError::Permanent(error))
        }
    }
}
