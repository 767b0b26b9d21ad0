//! A small W3C WebDriver client for the browser tests: it starts Debian's
//! `chromedriver` on a free port, opens one headless Chromium session and
//! offers the few commands the tests need (navigate, find, type, click, read
//! text and attributes, screenshots). There is no script execution on
//! purpose: the pages are script-free, and the tests see them as a user
//! without JavaScript would. These are test helpers, so every WebDriver error
//! panics with its error code and message.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};

/// The key under which W3C WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long chromedriver may take to report itself ready on `GET /status`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A headless Chromium session driven through a chromedriver child process
/// that this value owns. Dropping it ends the session (chromedriver then
/// quits Chromium) and kills chromedriver.
pub struct Browser {
    session: Session,
    /// Kept for its drop: kills chromedriver and removes its directory.
    _driver: Driver,
}

/// One element of the current page, as a WebDriver reference. It goes stale
/// (its commands panic) once the page navigates away.
#[derive(Clone, Debug)]
pub struct Element {
    session: Session,
    id: String,
}

/// The HTTP client and the session's base URL, `http://127.0.0.1:N/session/ID`.
#[derive(Clone, Debug)]
struct Session {
    http: reqwest::Client,
    base: String,
}

/// The chromedriver process and the directory it and Chromium get as
/// `TMPDIR` (for the profile and sockets Chromium would otherwise leave in
/// /tmp). On drop, also when `start` panics half-way, the process is killed
/// and reaped and the directory deleted.
struct Driver {
    child: Child,
    tmp: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. When either is
    /// not installed, says so loudly on stderr and returns `None`, or panics
    /// if `BCCI_TEST_REQUIRE_BROWSER=1`. Any other failure panics.
    pub async fn start() -> Option<Browser> {
        let driver_path = find_program("BCCI_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        let chromium = find_program("BCCI_TEST_CHROMIUM", "/usr/bin/chromium");
        let (Some(driver_path), Some(chromium)) = (driver_path, chromium) else {
            if std::env::var("BCCI_TEST_REQUIRE_BROWSER").is_ok_and(|v| v == "1") {
                panic!("BCCI_TEST_REQUIRE_BROWSER=1 but chromedriver or chromium is missing");
            }
            eprintln!(
                "SKIPPED: no chromedriver/chromium (apt-get install chromium chromium-driver); \
                 set BCCI_TEST_REQUIRE_BROWSER=1 to fail instead"
            );
            return None;
        };
        let port = crate::common::free_port();
        let tmp =
            std::env::temp_dir().join(format!("bcci-webdriver-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("create {tmp:?}: {e}"));
        let child = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .env("TMPDIR", &tmp)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = child.unwrap_or_else(|e| panic!("start {driver_path:?}: {e}"));
        let mut driver = Driver { child, tmp };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(60));
        let http = http.build().expect("build the WebDriver HTTP client");
        let base = format!("http://127.0.0.1:{port}");
        wait_ready(&http, &base, &mut driver.child).await;

        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000", "--lang=vi"],
                // `--lang` alone leaves headless Chromium's Accept-Language at en-US.
                "prefs": { "intl.accept_languages": "vi" },
            },
        }}});
        let mut session = Session { http, base };
        let created = session.try_cmd(Method::POST, "/session", caps).await;
        let created = created.unwrap_or_else(|e| panic!("new session with {chromium:?}: {e}"));
        let Some(session_id) = created["sessionId"].as_str().map(str::to_owned) else {
            panic!("new session answer without a sessionId: {created}");
        };
        session.base = format!("{}/session/{session_id}", session.base);
        Some(Browser {
            session,
            _driver: driver,
        })
    }

    /// Navigates to `url`; returns once the page has loaded.
    pub async fn goto(&self, url: &str) {
        self.session.post("/url", json!({ "url": url })).await;
    }

    /// The URL of the current page.
    pub async fn url(&self) -> String {
        self.session.url().await
    }

    /// The current page's HTML, as the browser now has it.
    pub async fn source(&self) -> String {
        self.session.string("/source").await
    }

    /// The first element matching the CSS selector; panics with the selector
    /// and the current URL when there is none.
    pub async fn find(&self, css: &str) -> Element {
        let query = json!({ "using": "css selector", "value": css });
        match self.session.try_cmd(Method::POST, "/element", query).await {
            Ok(value) => self.session.element(value),
            Err(e) => panic!("no element {css:?} on {}: {e}", self.url().await),
        }
    }

    /// Every element matching the CSS selector, in document order.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let query = json!({ "using": "css selector", "value": css });
        match self.session.post("/elements", query).await {
            Value::Array(found) => found.into_iter().map(|v| self.session.element(v)).collect(),
            other => panic!("find elements {css:?} answered {other}"),
        }
    }

    /// Whether any element matches the CSS selector.
    pub async fn exists(&self, css: &str) -> bool {
        !self.find_all(css).await.is_empty()
    }

    /// Writes a PNG screenshot of the viewport to `path`, creating its parent
    /// directories.
    pub async fn screenshot(&self, path: &Path) {
        let png = self.session.string("/screenshot").await;
        let png = base64::engine::general_purpose::STANDARD.decode(png);
        let png = png.expect("the screenshot is base64");
        let dir = path.parent().unwrap_or(path);
        let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(path, png));
        written.unwrap_or_else(|e| panic!("write the screenshot {path:?}: {e}"));
    }

    /// Resizes the browser window (the viewport is a little smaller).
    pub async fn set_window_size(&self, width: u32, height: u32) {
        let rect = json!({ "width": width, "height": height });
        self.session.post("/window/rect", rect).await;
    }
}

impl Drop for Browser {
    /// Ends the session, so chromedriver quits Chromium (killing chromedriver
    /// alone leaves Chromium running); then `Driver` kills chromedriver.
    fn drop(&mut self) {
        let _ = delete_session(&self.session.base);
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

impl Element {
    /// Clicks the element (a submit button submits its form); returns once
    /// a navigation the click starts has loaded.
    pub async fn click(&self) {
        self.session.post(&self.path("click"), json!({})).await;
    }

    /// Types `text` into the element, after what it already holds.
    pub async fn send_keys(&self, text: &str) {
        let keys = json!({ "text": text });
        self.session.post(&self.path("value"), keys).await;
    }

    /// The element's rendered text, as a user sees it.
    pub async fn text(&self) -> String {
        self.session.string(&self.path("text")).await
    }

    /// The HTML attribute's value, or `None` when the element does not have
    /// it. This is the markup's value: for an input, what the server
    /// rendered, not what was typed since.
    pub async fn attr(&self, name: &str) -> Option<String> {
        let path = self.path(&format!("attribute/{name}"));
        match self.session.cmd(Method::GET, &path, Value::Null).await {
            Value::Null => None,
            Value::String(value) => Some(value),
            other => Some(other.to_string()),
        }
    }

    fn path(&self, command: &str) -> String {
        format!("/element/{}/{command}", self.id)
    }
}

impl Session {
    /// GETs a command whose value is a string (title, text, screenshot...).
    async fn string(&self, path: &str) -> String {
        match self.cmd(Method::GET, path, Value::Null).await {
            Value::String(value) => value,
            other => panic!("WebDriver GET {path} answered {other}, not a string"),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.cmd(Method::POST, path, body).await
    }

    /// Runs a command (`body` is `Null` for GET and DELETE); a WebDriver
    /// error panics, naming the command and the current URL.
    async fn cmd(&self, method: Method, path: &str, body: Value) -> Value {
        match self.try_cmd(method.clone(), path, body).await {
            Ok(value) => value,
            Err(e) => panic!("WebDriver {method} {path} on {}: {e}", self.url().await),
        }
    }

    /// Runs a command and returns the answer's `value`, or the WebDriver
    /// error it carries as `error: message`. No JSON answer panics.
    async fn try_cmd(&self, method: Method, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url);
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await;
        let response = response.unwrap_or_else(|e| panic!("WebDriver {method} {url}: {e}"));
        let status = response.status();
        let reply = response.json::<Value>().await;
        let mut reply = reply.unwrap_or_else(|e| panic!("WebDriver {method} {url}: {status}: {e}"));
        let value = reply["value"].take();
        if status.is_success() {
            return Ok(value);
        }
        let field = |name: &str| value[name].as_str().unwrap_or_default().to_owned();
        let (error, message) = (field("error"), field("message"));
        if message.starts_with(&error) {
            return Err(message); // chromedriver's messages start with the code
        }
        Err(format!("{error}: {message}"))
    }

    /// The current URL, or what went wrong asking (it is used in panics).
    async fn url(&self) -> String {
        match self.try_cmd(Method::GET, "/url", Value::Null).await {
            Ok(Value::String(url)) => url,
            other => format!("<unknown URL: {other:?}>"),
        }
    }

    fn element(&self, value: Value) -> Element {
        let Some(id) = value[ELEMENT_KEY].as_str().map(str::to_owned) else {
            panic!("not a WebDriver element reference: {value}");
        };
        let session = self.clone();
        Element { session, id }
    }
}

/// Polls `GET /status` until chromedriver says it is ready; panics if it
/// exits first or is not ready within `READY_TIMEOUT`.
async fn wait_ready(http: &reqwest::Client, base: &str, child: &mut Child) {
    let deadline = Instant::now() + READY_TIMEOUT;
    let status = format!("{base}/status");
    loop {
        let request = http.get(&status).timeout(Duration::from_secs(2));
        if let Ok(response) = request.send().await
            && let Ok(body) = response.json::<Value>().await
            && body["value"]["ready"] == true
        {
            return;
        }
        if let Some(exit) = child.try_wait().expect("poll the chromedriver process") {
            panic!("chromedriver exited ({exit}) before it was ready on {base}");
        }
        if Instant::now() > deadline {
            panic!("chromedriver not ready on {base} in {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The program the environment variable `env` names (missing if that is not
/// a file), else `default` if it exists, else `default`'s name on `PATH`.
fn find_program(env: &str, default: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Some(PathBuf::from(path)).filter(|path| path.is_file());
    }
    let default = Path::new(default);
    let name = default.file_name()?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path).map(|dir| dir.join(name));
    let mut candidates = std::iter::once(default.to_owned()).chain(on_path);
    candidates.find(|path| path.is_file())
}

/// `DELETE` of the session URL `http://HOST:PORT/session/ID`, with blocking
/// std I/O (`drop` cannot await). chromedriver answers once Chromium is gone.
fn delete_session(url: &str) -> std::io::Result<()> {
    let url = url.trim_start_matches("http://");
    let (host, path) = url.split_once('/').unwrap_or((url, ""));
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let request = format!(
        "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    stream.read(&mut [0; 256]).map(drop)
}
