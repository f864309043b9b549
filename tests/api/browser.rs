//! A headless Chromium (Debian's package, which .ci/run installs) driven over the DevTools
//! protocol: open a page, evaluate JavaScript in it. Each browser has a profile of its own and
//! dies with its handle.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct Browser {
    process: Child,
    devtools: WebSocketStream<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    profile: std::path::PathBuf,
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

impl Browser {
    /// Starts Chromium and opens `url` in a tab.
    pub async fn open(url: &str) -> Self {
        let profile = std::env::temp_dir().join(format!("cc-chromium-{}", uuid::Uuid::now_v7()));
        let mut process = Command::new(chromium())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "about:blank",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "the console test needs Chromium (apt-get install chromium, or set \
                     CHROMIUM): {e}"
                )
            });
        let stderr = process.stderr.take().unwrap();
        let endpoint = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stderr).lines();
            let found = lines.by_ref().map_while(Result::ok).find_map(|line| {
                line.split_once("DevTools listening on ")
                    .map(|(_, u)| u.to_string())
            });
            // Keep draining, so Chromium never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            found
        })
        .await
        .unwrap()
        .expect("Chromium prints its DevTools endpoint");
        let (devtools, _) = tokio_tungstenite::connect_async(endpoint.trim())
            .await
            .expect("the DevTools endpoint accepts");
        let mut browser = Self {
            process,
            devtools,
            session: String::new(),
            next_id: 0,
            profile,
        };
        let target = browser
            .command("Target.createTarget", json!({"url": url}))
            .await;
        let attached = browser
            .command(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        browser
    }

    async fn command(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.devtools
            .send(Message::text(message.to_string()))
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let Some(Ok(Message::Text(text))) = self.devtools.next().await else {
                    panic!("the DevTools connection closed");
                };
                let answer: Value = serde_json::from_str(&text).unwrap();
                if answer["id"] == id {
                    return answer;
                }
            }
        })
        .await
        .expect("DevTools answers");
        assert!(answer["error"].is_null(), "{method}: {}", answer["error"]);
        answer["result"].clone()
    }

    /// The value of `expression` in the page (awaited when it is a promise).
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .command(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is `true` or `limit` passes; whether it became true. It
    /// may throw meanwhile (the page still loading).
    pub async fn until(&mut self, limit: Duration, expression: &str) -> bool {
        let guarded =
            format!("(() => {{ try {{ return {expression}; }} catch (e) {{ return false; }} }})()");
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if self.eval(&guarded).await == json!(true) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
