//! Headless Chromium for page tests: a real browser loads a page (sending its own
//! `Accept: text/html,...`, running the page's scripts) and hands back the DOM after load, or
//! a screenshot. Each call is one `chromium --headless` process with a fresh profile (tests run
//! in parallel), bounded by a timeout after which its whole process group is killed.
//!
//! Never mocked: a machine without Chromium fails loudly saying how to install it, never skips
//! (`HOSTIE_CHROMIUM` names another binary). Every call blocks the calling thread for about a
//! second: in an async test whose server runs on the test's own runtime, call it inside
//! `tokio::task::spawn_blocking`.
//!
//! What the command line cannot tell: the HTTP status (a 404 page is dumped like any other)
//! and request headers of the test's choosing. A page that fails to load at all (refused,
//! reset) is a panic naming Chromium's `net::ERR_...`.

use scraper::{Html, Selector};
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one page load may take before its Chromium is killed.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Set to `1`, [`Browser::screenshot_artifact`] also copies into `docs/screenshots/` (the
/// README's images); otherwise no test writes into the source tree.
pub const UPDATE_SCREENSHOTS: &str = "HOSTIE_UPDATE_SCREENSHOTS";

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// A headless Chromium; cheap to clone (into `spawn_blocking`).
#[derive(Clone, Debug)]
pub struct Browser {
    binary: PathBuf,
    timeout: Duration,
    settle: Option<Duration>,
}

impl Browser {
    /// `$HOSTIE_CHROMIUM`, else `chromium` on `PATH`; panics saying how to install it.
    pub fn find() -> Self {
        let binary = match std::env::var_os("HOSTIE_CHROMIUM") {
            Some(path) => {
                let path = PathBuf::from(path);
                assert!(
                    path.is_file(),
                    "HOSTIE_CHROMIUM={} is not a file",
                    path.display()
                );
                path
            }
            None => on_path("chromium").unwrap_or_else(|| {
                panic!(
                    "chromium not found: install Debian's chromium: apt-get install chromium \
                     (scripts/test installs it when missing), or set HOSTIE_CHROMIUM to a \
                     Chromium binary"
                )
            }),
        };
        Self {
            binary,
            timeout: DEFAULT_TIMEOUT,
            settle: None,
        }
    }

    /// Kills Chromium after `timeout` instead of [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Lets the page run for `budget` of virtual time after load before the DOM is dumped or
    /// the screenshot taken (`--virtual-time-budget`): timers and the `fetch`es they start
    /// finish first. Virtual time runs ahead while nothing is pending, so it costs less than
    /// `budget` of wall time.
    pub fn settle(mut self, budget: Duration) -> Self {
        self.settle = Some(budget);
        self
    }

    /// The serialized DOM of `url` after load (its scripts have run).
    pub fn dump_dom(&self, url: &str) -> String {
        let out = self
            .run(url, &["--dump-dom".to_owned()])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!out.is_empty(), "chromium dumped no DOM of {url}");
        String::from_utf8(out).unwrap_or_else(|e| panic!("chromium dumped {url} as non-UTF-8: {e}"))
    }

    /// A PNG of `url` as a `w`×`h` window shows it, written to `path` (replaced).
    pub fn screenshot(&self, url: &str, path: &Path, (w, h): (u32, u32)) {
        let path = std::path::absolute(path).expect("an absolute screenshot path");
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing the old {}: {e}", path.display()),
        }
        self.run(
            url,
            &[
                format!("--screenshot={}", path.display()),
                format!("--window-size={w},{h}"),
                "--hide-scrollbars".to_owned(),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let png = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("chromium wrote no screenshot {}: {e}", path.display()));
        assert!(
            png.starts_with(PNG_SIGNATURE) && png.len() > PNG_SIGNATURE.len(),
            "{} is a PNG ({} bytes)",
            path.display(),
            png.len()
        );
    }

    /// [`Browser::screenshot`] into [`artifact_dir`]`/name` (CI keeps it), also copied into
    /// `docs/screenshots/name` when `HOSTIE_UPDATE_SCREENSHOTS=1`. Returns the artifact.
    pub fn screenshot_artifact(&self, url: &str, name: &str, size: (u32, u32)) -> PathBuf {
        let path = artifact_dir().join(name);
        self.screenshot(url, &path, size);
        if std::env::var(UPDATE_SCREENSHOTS).is_ok_and(|v| v == "1") {
            let docs = workspace_root().join("docs/screenshots");
            std::fs::create_dir_all(&docs).expect("docs/screenshots is created");
            std::fs::copy(&path, docs.join(name)).expect("the screenshot is copied into docs");
        }
        path
    }

    /// One headless Chromium on `url` with `args`, in a fresh profile; its stdout, or why not.
    fn run(&self, url: &str, args: &[String]) -> Result<Vec<u8>, String> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let mut command = Command::new(&self.binary);
        command
            // Root (CI, containers) needs --no-sandbox; no GPU and a small /dev/shm in
            // containers.
            .args(["--headless=new", "--no-sandbox", "--disable-gpu"])
            .arg("--disable-dev-shm-usage")
            // Nothing but the page: no first-run work, no calls home while testing.
            .args(["--no-first-run", "--disable-background-networking"])
            .arg(format!(
                "--user-data-dir={}",
                dir.path().join("profile").display()
            ))
            .args(
                self.settle
                    .map(|b| format!("--virtual-time-budget={}", b.as_millis())),
            )
            .args(args)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("a stdout file"))
            .stderr(File::create(&stderr).expect("a stderr file"))
            // Its own process group: the timeout kills the renderers and helpers too.
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| format!("{} does not start: {e}", self.binary.display()))?;
        let end = Instant::now() + self.timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("chromium is waited for") {
                break Some(status);
            }
            if Instant::now() >= end {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let log = || stderr_tail(&std::fs::read_to_string(&stderr).unwrap_or_default());
        let Some(status) = status else {
            // The group's id is the child's pid, not reaped yet: no other process holds it.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.wait();
            return Err(format!(
                "chromium did not finish {url} within {:?} (killed){}",
                self.timeout,
                log()
            ));
        };
        if !status.success() {
            return Err(format!("chromium on {url} exited with {status}{}", log()));
        }
        let out = std::fs::read(&stdout).expect("chromium's stdout is read");
        let failed = std::fs::read_to_string(&stderr)
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.split_once("Page load failed: ")
                    .map(|(_, why)| why.to_owned())
            });
        match failed {
            Some(why) => Err(format!("chromium could not load {url}: {why}")),
            None => Ok(out),
        }
    }
}

/// The last lines of Chromium's stderr for a failure message, without the noise every run
/// prints in a container (no D-Bus, the Debian wrapper's `/dev/shm` check).
fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("dbus") && !l.contains("unexpected operator"))
        .collect();
    let tail = &lines[lines.len().saturating_sub(20)..];
    if tail.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends:\n{}", tail.join("\n"))
    }
}

fn on_path(binary: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|p| p.join(binary))
        .find(|p| p.is_file())
}

/// The workspace's root directory (this crate is `tests/kit` in it).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/kit is two levels below the workspace root")
        .to_owned()
}

/// `test-artifacts/` in the target directory (`$CARGO_TARGET_DIR`, else the workspace's
/// `target/`), created on demand: screenshots and other files CI keeps from a run.
pub fn artifact_dir() -> PathBuf {
    let root = workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("the artifact directory {}: {e}", dir.display()));
    dir
}

/// A parsed page for assertions (the DOM [`Browser::dump_dom`] returned, or any HTML).
pub struct Dom(Html);

impl Dom {
    pub fn parse(html: &str) -> Self {
        Self(Html::parse_document(html))
    }

    /// The text of every element matching `css`, in document order, trimmed.
    pub fn select_text(&self, css: &str) -> Vec<String> {
        self.0
            .select(&selector(css))
            .map(|e| e.text().collect::<String>().trim().to_owned())
            .collect()
    }

    /// Attribute `name` of the first element matching `css` (`None`: no such element, or it
    /// lacks the attribute).
    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        self.0
            .select(&selector(css))
            .next()
            .and_then(|e| e.value().attr(name))
            .map(str::to_owned)
    }
}

fn selector(css: &str) -> Selector {
    Selector::parse(css).unwrap_or_else(|e| panic!("CSS selector {css:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;

    const PAGE: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>kit</title>\
        </head><body><h1 id=\"x\">static</h1>\n<p class=\"escaped\">a &lt;b&gt; &amp; c</p>\n\
        <a id=\"home\" href=\"/home?a=1&amp;b=2\">home</a>\n\
        <script>document.getElementById('x').textContent = 'rendered';</script></body></html>\n";

    /// Its text comes from `/data`, fetched 300 ms after load.
    const LATE: &str = "<!doctype html><p id=\"late\">waiting</p><script>setTimeout(() => \
        fetch('/data').then(r => r.text()).then(t => { \
        document.getElementById('late').textContent = t; }), 300);</script>";

    /// A loopback HTTP server for one test: `/` is [`PAGE`], `/late` is [`LATE`], `/hang`
    /// never answers, anything else is a 404. Records each request's `Accept`; stops when dropped, or after a minute.
    struct PageServer {
        port: u16,
        accepts: Arc<Mutex<Vec<(String, String)>>>,
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
    }

    impl PageServer {
        fn start() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.set_nonblocking(true).unwrap();
            let port = listener.local_addr().unwrap().port();
            let accepts = Arc::new(Mutex::new(Vec::new()));
            let stop = Arc::new(AtomicBool::new(false));
            let (seen, stopped) = (accepts.clone(), stop.clone());
            let thread = std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(60);
                while !stopped.load(Ordering::Relaxed) && Instant::now() < end {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (seen, stopped) = (seen.clone(), stopped.clone());
                            std::thread::spawn(move || serve(stream, &seen, &stopped));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
            Self {
                port,
                accepts,
                stop,
                thread: Some(thread),
            }
        }

        fn url(&self, path: &str) -> String {
            format!("http://127.0.0.1:{}{path}", self.port)
        }

        /// `Accept` of the first request for `path`.
        fn accept_of(&self, path: &str) -> Option<String> {
            let seen = self.accepts.lock().unwrap();
            seen.iter().find(|(p, _)| p == path).map(|(_, a)| a.clone())
        }
    }

    impl Drop for PageServer {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// One request on one connection (`Connection: close`).
    fn serve(mut stream: TcpStream, seen: &Mutex<Vec<(String, String)>>, stop: &AtomicBool) {
        stream.set_nonblocking(false).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => return,
            }
        }
        let head = String::from_utf8_lossy(&head);
        let path = head.split(' ').nth(1).unwrap_or("").to_owned();
        let accept = head
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(name, _)| name.eq_ignore_ascii_case("accept"))
            })
            .map_or("", |(_, v)| v.trim())
            .to_owned();
        seen.lock().unwrap().push((path.clone(), accept));
        let (status, body) = match path.as_str() {
            "/" => ("200 OK", PAGE),
            "/late" => ("200 OK", LATE),
            "/data" => ("200 OK", "fetched"),
            "/hang" => {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
            _ => ("404 Not Found", "<!doctype html><p>not found</p>"),
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }

    #[test]
    fn dump_dom_runs_the_pages_script_and_keeps_escaped_text() {
        let server = PageServer::start();
        let started = Instant::now();
        let html = Browser::find().dump_dom(&server.url("/"));
        eprintln!("one dump_dom: {:?}", started.elapsed());

        let dom = Dom::parse(&html);
        assert_eq!(dom.select_text("#x"), ["rendered"], "{html}");
        assert_eq!(dom.select_text("p.escaped"), ["a <b> & c"]);
        assert!(html.contains("a &lt;b&gt; &amp; c"), "{html}");
        assert_eq!(dom.attr("a#home", "href").as_deref(), Some("/home?a=1&b=2"));
        assert_eq!(dom.attr("a#home", "title"), None);
        assert_eq!(dom.attr("a#nowhere", "href"), None);
        // A real browser's navigation, not an API client's.
        let accept = server.accept_of("/").expect("chromium requested /");
        assert!(accept.starts_with("text/html,"), "Accept: {accept}");
    }

    #[test]
    fn settle_waits_for_what_the_page_fetches_after_load() {
        let server = PageServer::start();
        let browser = Browser::find().settle(Duration::from_secs(5));
        let started = Instant::now();
        let dom = Dom::parse(&browser.dump_dom(&server.url("/late")));
        assert_eq!(dom.select_text("#late"), ["fetched"]);
        // Virtual time: the budget is not waited out in wall time.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn screenshot_writes_a_png() {
        let server = PageServer::start();
        let path = artifact_dir().join("testkit-browser.png");
        Browser::find().screenshot(&server.url("/"), &path, (640, 360));
        let png = std::fs::read(&path).unwrap();
        assert!(png.starts_with(PNG_SIGNATURE));
    }

    #[test]
    fn a_page_that_never_answers_is_killed_at_the_timeout() {
        let server = PageServer::start();
        let browser = Browser::find().timeout(Duration::from_secs(1));
        let started = Instant::now();
        let err = browser
            .run(&server.url("/hang"), &["--dump-dom".to_owned()])
            .unwrap_err();
        let took = started.elapsed();
        assert!(err.contains("did not finish"), "{err}");
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(4),
            "{took:?}"
        );
    }

    #[test]
    fn a_refused_page_is_an_error_not_an_empty_dom() {
        let browser = Browser::find();
        let url = format!("http://127.0.0.1:{}/", crate::free_port());
        let err = browser.run(&url, &["--dump-dom".to_owned()]).unwrap_err();
        assert!(err.contains("ERR_CONNECTION_REFUSED"), "{err}");
    }

    #[test]
    fn dom_selects_trimmed_text_in_document_order() {
        let dom = Dom::parse("<ul><li> one </li><li>\n t<b>wo</b>\n</li></ul><li>x</li>");
        assert_eq!(dom.select_text("ul > li"), ["one", "two"]);
        assert!(dom.select_text("table").is_empty());
    }
}
