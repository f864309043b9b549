//! Progressive trust (SPEC §6): levels and the features they unlock (`level`, `gate`),
//! verifications, the score and its factors (`score`), the trust document, the recompute
//! that promotes and demotes, and risk signals. See docs/TRUST.md.

pub mod gate;
pub mod level;
pub mod model;
pub mod platform;
pub mod recompute;
pub mod risk;
pub mod routes;
pub mod score;
pub mod store;
