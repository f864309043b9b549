//! The notification tests' real peers: an SMTP server process (aiosmtpd, from PyPI, which
//! .ci/run installs beside moto; `MOTO_PYTHON` names the python that has both) and a local
//! HTTP server speaking Twilio's Messages API (status codes, error bodies, 429 with
//! `Retry-After`, a slow answer).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::eventually;

/// The SMTP server: records every message it accepts. Mode `auth` takes plain text and
/// requires AUTH as `mailer` / `secret`. Recipients whose local part starts with
/// `permanent` are refused with 550; `busy` ones with 451 every time; `flaky` ones with 451
/// the first time; `delay_ms` holds each DATA that long before its 250.
const SMTP: &str = r#"
import asyncio, json, ssl, sys
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

mode, port, cert, key, delay_ms = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
seen = {}

class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split('@')[0]
        if local.startswith('permanent'):
            return '550 5.1.1 mailbox unavailable'
        if local.startswith('busy'):
            return '451 4.3.2 busy, try again later'
        if local.startswith('flaky'):
            n = seen.get(address, 0)
            seen[address] = n + 1
            if n == 0:
                return '451 4.3.0 try again later'
        envelope.rcpt_tos.append(address)
        return '250 OK'

    async def handle_DATA(self, server, session, envelope):
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        print(json.dumps({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                          "data": envelope.content.decode('utf8', 'replace'),
                          "tls": session.ssl is not None
                                 or server.transport.get_extra_info('ssl_object') is not None}),
              flush=True)
        return '250 Message accepted for delivery'

def authenticate(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b'mailer', b'secret')
    if ok:
        return AuthResult(success=True)
    return AuthResult(success=False, handled=False, message='535 5.7.8 Authentication credentials invalid')

kwargs = dict(hostname='127.0.0.1', port=port)
if mode == 'auth':
    kwargs.update(authenticator=authenticate, auth_required=True, auth_require_tls=False)
elif mode != 'none':
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if mode == 'starttls':
        kwargs.update(tls_context=context, require_starttls=True)
    else:
        kwargs.update(ssl_context=context, server_hostname='localhost')
controller = Controller(Handler(), **kwargs)
controller.start()
print("READY", flush=True)
sys.stdin.read()
controller.stop()
"#;

/// What the SMTP server received.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: Vec<String>,
    pub data: String,
    pub tls: bool,
}

impl Mail {
    /// A header's value (unfolded), by name.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or(&self.data);
        let head = head
            .replace("\r\n ", " ")
            .replace("\r\n\t", " ")
            .replace("\n ", " ");
        head.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// The decoded subject (lettre encodes non-ASCII ones as RFC 2047 words).
    pub fn subject(&self) -> String {
        let raw = self.header("Subject").unwrap_or_default();
        raw.split(' ')
            .map(|word| {
                match word
                    .strip_prefix("=?utf-8?b?")
                    .and_then(|w| w.strip_suffix("?="))
                {
                    Some(b64) => String::from_utf8(
                        base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .unwrap(),
                    )
                    .unwrap(),
                    None => word.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

pub struct SmtpServer {
    pub port: u16,
    mail: Arc<Mutex<Vec<Mail>>>,
    child: Option<Child>,
}

/// A free local port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl SmtpServer {
    /// `mode`: `none`, `auth`, `starttls` or `tls` (then with `cert` and `key`, PEM files).
    pub fn start(mode: &str, tls: Option<(&str, &str)>, delay_ms: u64) -> Self {
        let python = std::env::var("MOTO_PYTHON").unwrap_or_else(|_| "python3".into());
        let install = "the notification tests need aiosmtpd: run .ci/run, or \
                       `pip install aiosmtpd` and set MOTO_PYTHON to that python";
        let port = free_port();
        let (cert, key) = tls.unwrap_or(("", ""));
        let mut child = Command::new(&python)
            .args([
                "-c",
                SMTP,
                mode,
                &port.to_string(),
                cert,
                key,
                &delay_ms.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{install} (running {python}: {e})"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        if !matches!(lines.next(), Some(Ok(ref l)) if l == "READY") {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .ok();
            panic!("{install}; {python} said:\n{stderr}");
        }
        let mail = Arc::new(Mutex::new(Vec::new()));
        let sink = mail.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line).unwrap();
                sink.lock().unwrap().push(Mail {
                    to: serde_json::from_value(v["to"].clone()).unwrap(),
                    data: v["data"].as_str().unwrap().to_string(),
                    tls: v["tls"].as_bool().unwrap(),
                });
            }
        });
        Self {
            port,
            mail,
            child: Some(child),
        }
    }

    pub fn received(&self) -> Vec<Mail> {
        self.mail.lock().unwrap().clone()
    }

    /// Waits until at least `n` messages arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Mail> {
        let arrived = eventually(Duration::from_secs(20), || async {
            self.mail.lock().unwrap().len() >= n
        })
        .await;
        assert!(arrived, "{n} messages, got {}", self.received().len());
        self.received()
    }

    /// The server's variables (`SMTP_TLS` mode, `from` address).
    pub fn vars(&self, mode: &str) -> Vec<(String, String)> {
        [
            (
                "SMTP_HOST",
                if mode == "none" {
                    "127.0.0.1"
                } else {
                    "localhost"
                }
                .to_string(),
            ),
            ("SMTP_PORT", self.port.to_string()),
            (
                "SMTP_TLS",
                if mode == "auth" { "none" } else { mode }.to_string(),
            ),
            (
                "SMTP_FROM",
                "Convcommerce <noreply@notify.example>".to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub const TWILIO_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const TWILIO_TOKEN: &str = "twilio-test-auth-token";
pub const TWILIO_FROM: &str = "+15005550006";

/// A message the Twilio peer accepted.
#[derive(Debug, Clone)]
pub struct Sent {
    pub sid: String,
    pub form: HashMap<String, String>,
}

#[derive(Default)]
struct TwilioState {
    sent: Vec<Sent>,
    /// Requests per `To`, for the answers that change on a retry.
    tries: HashMap<String, u32>,
}

/// A local HTTP server with Twilio's Messages API shape. The answer depends on `To`:
/// `+15005550001` is an invalid number (400, code 21211); `+1555429...` is rate limited the
/// first time (429, `Retry-After: 2`); `+1555500...` fails the first time (500); `+1555777...`
/// answers the first time after 2 s (a timeout for a client that waits less); `+1555333...` is
/// accepted, and listed in `sent` a second before the answer (so Twilio's callback can come
/// first); any other is accepted (201, `status: queued`).
pub struct TwilioPeer {
    pub base: String,
    state: Arc<Mutex<TwilioState>>,
    _server: tokio::task::JoinHandle<()>,
}

fn twilio_error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status.as_u16()})),
    )
        .into_response()
}

async fn messages(
    State(state): State<Arc<Mutex<TwilioState>>>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{TWILIO_SID}:{TWILIO_TOKEN}"))
    );
    let authorized = headers
        .get("authorization")
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    if !authorized || account != TWILIO_SID {
        return twilio_error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let to = form.get("To").cloned().unwrap_or_default();
    let first = {
        let mut s = state.lock().unwrap();
        let n = s.tries.entry(to.clone()).or_default();
        *n += 1;
        *n == 1
    };
    if to == "+15005550001" {
        return twilio_error(
            StatusCode::BAD_REQUEST,
            21211,
            "The 'To' number +15005550001 is not a valid phone number.",
        );
    }
    if to.starts_with("+1555429") && first {
        let mut r = twilio_error(StatusCode::TOO_MANY_REQUESTS, 20429, "Too Many Requests");
        r.headers_mut().insert("retry-after", "2".parse().unwrap());
        return r;
    }
    if to.starts_with("+1555500") && first {
        return twilio_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            20500,
            "Internal Server Error",
        );
    }
    if to.starts_with("+1555777") && first {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let sid = format!("SM{}", uuid::Uuid::now_v7().simple());
    state.lock().unwrap().sent.push(Sent {
        sid: sid.clone(),
        form: form.clone(),
    });
    if to.starts_with("+1555333") {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    (
        StatusCode::CREATED,
        axum::Json(json!({"sid": sid, "account_sid": TWILIO_SID, "to": to,
            "from": form.get("From"), "body": form.get("Body"), "status": "queued",
            "num_segments": "1", "api_version": "2010-04-01"})),
    )
        .into_response()
}

impl TwilioPeer {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(TwilioState::default()));
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{account}/Messages.json",
                post(messages),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            base,
            state,
            _server: server,
        }
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.state.lock().unwrap().sent.clone()
    }

    pub fn vars(&self) -> Vec<(String, String)> {
        [
            ("TWILIO_ACCOUNT_SID", TWILIO_SID),
            ("TWILIO_AUTH_TOKEN", TWILIO_TOKEN),
            ("TWILIO_FROM_NUMBER", TWILIO_FROM),
            ("TWILIO_API_BASE_URL", self.base.as_str()),
            ("TWILIO_TIMEOUT_MILLISECONDS", "500"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }
}
