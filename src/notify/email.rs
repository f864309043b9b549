//! Email over SMTP (lettre): multipart text and HTML, the subject prefixed by priority, a
//! Message-ID derived from the delivery, so a retry after a crash carries the same id and a
//! receiver can drop the repeat.

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use uuid::Uuid;

use super::model::Priority;
use super::outbox::SendError;
use super::templates::Rendered;
use crate::config::{SmtpConfig, SmtpTls};

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The domain of Message-IDs: the `From` address's.
    domain: String,
    timeout: std::time::Duration,
}

/// The Message-ID of a delivery's email: the same on every attempt.
pub fn message_id(delivery: Uuid, domain: &str) -> String {
    format!("<{delivery}@{domain}>")
}

impl Mailer {
    pub fn new(config: &SmtpConfig) -> anyhow::Result<Self> {
        let from: Mailbox = config.from.parse()?;
        let domain = from.email.domain().to_string();
        let tls = match config.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::StartTls => Tls::Required(tls_parameters(config)?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters(config)?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .tls(tls)
            .timeout(Some(config.timeout));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_string(),
            ));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            domain,
            timeout: config.timeout,
        })
    }

    /// Sends one delivery's email; its Message-ID once the server answered 250 to the data.
    pub async fn send(
        &self,
        delivery: Uuid,
        to: &str,
        priority: Priority,
        rendered: &Rendered,
    ) -> Result<String, SendError> {
        let permanent =
            |what: &str, e: &dyn std::fmt::Display| SendError::Permanent(format!("{what}: {e}"));
        let to: Mailbox = to.parse().map_err(|e| permanent("the address", &e))?;
        let id = message_id(delivery, &self.domain);
        let subject = format!(
            "{}{}",
            priority.subject_prefix(),
            rendered.subject.as_deref().unwrap_or_default()
        );
        let message = Message::builder()
            .message_id(Some(id.clone()))
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .multipart(MultiPart::alternative_plain_html(
                rendered.text.clone(),
                rendered.html.clone().unwrap_or_default(),
            ))
            .map_err(|e| permanent("the message", &e))?;
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(id),
            Ok(Err(e)) if e.is_permanent() => Err(SendError::Permanent(format!("SMTP: {e}"))),
            Ok(Err(e)) => Err(SendError::Transient {
                error: format!("SMTP: {e}"),
                after: None,
            }),
            Err(_) => Err(SendError::Transient {
                error: format!("SMTP: no answer within {} ms", self.timeout.as_millis()),
                after: None,
            }),
        }
    }
}

/// TLS to the SMTP server: the system's roots, or only `SMTP_TLS_CA_FILE`'s when set.
fn tls_parameters(config: &SmtpConfig) -> anyhow::Result<TlsParameters> {
    let mut builder = TlsParameters::builder(config.host.clone());
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path)?;
        builder = builder
            .certificate_store(CertificateStore::None)
            .add_root_certificate(Certificate::from_pem(&pem)?);
    }
    Ok(builder.build_rustls()?)
}
