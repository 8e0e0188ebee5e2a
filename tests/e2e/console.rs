//! The web console in a real browser: headless Chromium driven through chromedriver (WebDriver),
//! against the real server with jobs submitted through the real CLI.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::support::{postgres_url, required_program, tokens_file, Server};

const READER: &str = "console-reader-token-0123456789";
const SUBMITTER: &str = "console-submitter-token-0123456789";
const ADMIN: &str = "console-admin-token-0123456789";

/// chromedriver and a headless Chromium session; both go when it is dropped.
struct Browser {
    driver: Child,
    client: Client,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    async fn start() -> Option<Browser> {
        if !required_program("chromedriver", "apt-get install chromium chromium-driver") {
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({"args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-dev-shm-usage",
                "--window-size=1280,800",
            ]}),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => return Some(Browser { driver, client }),
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => {
                    panic!("cannot start a Chromium session through chromedriver: {error}")
                }
            }
        }
    }

    async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// Opens `url` and waits until `css` holds `expected`.
    async fn visit(&self, url: &str, css: &str, expected: &str) {
        self.open(url).await;
        self.until_contains(css, expected).await;
    }

    async fn until_contains(&self, css: &str, expected: &str) {
        self.until_text(css, expected, |text| text.contains(expected))
            .await;
    }

    /// Types `token` into the sign-in form and sends it.
    async fn sign_in(&self, token: &str) {
        let field = self.client.find(Locator::Id("token")).await.unwrap();
        field.send_keys(token).await.unwrap();
        self.client
            .find(Locator::Css("#login button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Waits until `check` holds for the text of the element `css` (which must appear).
    async fn until_text(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = element.text().await {
                    if check(&text) {
                        return text;
                    }
                    last = text;
                }
            }
            if Instant::now() > deadline {
                let html = self.client.source().await.unwrap_or_default();
                panic!("{what}: {css} never matched; last text {last:?}; page:\n{html}");
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Waits until the element `css` has `attribute` equal to `value`.
    async fn until_attribute(&self, css: &str, attribute: &str, value: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if element.attr(attribute).await.ok().flatten().as_deref() == Some(value) {
                    return;
                }
            }
            if Instant::now() > deadline {
                let html = self.client.source().await.unwrap_or_default();
                panic!("{css} never had {attribute}={value:?}; page:\n{html}");
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map_or(0, |found| found.len())
    }

    /// Clicks a button that opens the confirmation dialog, then confirms.
    async fn click_and_confirm(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.until_attribute("#confirm", "open", "true").await;
        self.client
            .find(Locator::Css("#confirm-ok"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
}

/// The jobs a test looks at: one that prints over a few seconds, one waiting on it, one quick.
fn submit_jobs(server: &Server) -> (String, String) {
    let talker = server.submit_script("echo first line; sleep 3; echo second line; sleep 3");
    let waiter = server.submit(&[
        "--queue",
        "default",
        "--definition",
        "hello",
        "--name",
        "waiter",
        "--depends-on",
        &format!("jobId={talker}"),
        "--",
        "true",
    ]);
    (talker, waiter)
}

async fn console_shows_jobs_live_and_cancels(server: Server) {
    let Some(browser) = Browser::start().await else {
        return;
    };
    server.apply_examples();
    let (talker, waiter) = submit_jobs(&server);
    let url = |path: &str| format!("{}{path}", server.url);

    // The job list, then a job submitted after it loaded appears and finishes without a reload.
    browser
        .visit(&url("/console/jobs"), "#job-list", &talker)
        .await;
    // A mark in the page's own memory: it survives a swap of sections, not a reload.
    browser
        .client
        .execute("window.batchctlTestMark = 1;", vec![])
        .await
        .unwrap();
    let quick = server.submit(&[
        "--queue",
        "default",
        "--definition",
        "hello",
        "--name",
        "quick",
    ]);
    browser
        .until_attribute(
            &format!("tr[data-job-id=\"{quick}\"]"),
            "data-status",
            "SUCCEEDED",
        )
        .await;
    assert_eq!(
        browser
            .client
            .execute("return window.batchctlTestMark === 1;", vec![])
            .await
            .unwrap(),
        json!(true),
        "the job appeared without a reload"
    );

    // Filters: by name (a prefix).
    browser
        .visit(&url("/console/jobs?name=wait*"), "#job-list", &waiter)
        .await;
    assert_eq!(browser.count("tr[data-job-id]").await, 1);

    // The running job's output follows live: the second line comes three seconds later.
    browser
        .visit(
            &url(&format!("/console/jobs/{talker}")),
            "#output",
            "first line",
        )
        .await;
    browser.until_contains("#output", "second line").await;

    // The waiting job says why, links its dependency, and is cancelled with the button.
    browser
        .visit(
            &url(&format!("/console/jobs/{waiter}")),
            "#job-why",
            "it waits for 1 to succeed",
        )
        .await;
    assert_eq!(
        browser
            .count(&format!("a[href=\"/console/jobs/{talker}\"]"))
            .await,
        1,
        "the dependency is a link"
    );
    browser
        .click_and_confirm("button[data-action$=\"/cancel\"]")
        .await;
    browser
        .until_attribute("#job-status", "data-status", "FAILED")
        .await;
    assert_eq!(server.job(&waiter)["status"], "FAILED");
    browser.until_contains("#status", "Done").await;

    // An array's page says how many children run at once and when it succeeds.
    let array = server.submit(&[
        "--queue",
        "default",
        "--definition",
        "hello",
        "--array-size",
        "2",
        "--max-concurrency",
        "1",
        "--max-failed-children",
        "1",
        "--",
        "true",
    ]);
    browser
        .visit(
            &url(&format!("/console/jobs/{array}")),
            "#job-summary",
            "at most 1 (maxConcurrency)",
        )
        .await;
    browser
        .until_contains("#job-summary", "at most 1 of its children failed")
        .await;

    // The overview: the queue's counts, the environment, the failure, a chart.
    browser.visit(&url("/"), "#failures", "waiter").await;
    browser
        .until_text(
            "tr[data-queue=\"default\"] [data-count=\"failed\"]",
            "failed count",
            |text| text == "1",
        )
        .await;
    assert!(browser.count("#environments tbody tr").await >= 1);
    assert!(
        browser
            .count("figure[data-chart-queue=\"default\"] svg.chart")
            .await
            == 2
    );

    // Readable on a phone: nothing wider than the screen but the tables' own scrollers.
    browser.client.set_window_size(390, 844).await.unwrap();
    let overflow = browser
        .client
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(overflow, json!(true), "the overview fits a phone's width");
    browser.client.clone().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_jobs_live_and_cancels_on_sqlite() {
    console_shows_jobs_live_and_cancels(Server::start(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_shows_jobs_live_and_cancels_on_postgres() {
    let Some(url) = postgres_url() else {
        return;
    };
    console_shows_jobs_live_and_cancels(Server::start(Some(url))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_asks_for_a_token_and_hides_what_a_read_token_cannot_do() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (_tokens, mut arguments) = tokens_file(&format!(
        "read {READER}\nsubmit {SUBMITTER}\nadmin {ADMIN}\n"
    ));
    arguments.push("--enable-process-executor".into());
    let mut server = Server::start_with(None, &arguments);
    server.token = Some(ADMIN.into());
    server.apply_examples();
    let (talker, waiter) = submit_jobs(&server);
    let refusal = "a valid API token is required";

    // Without a token the console shows the sign-in form and no data.
    browser
        .visit(
            &format!("{}/console/jobs/{waiter}", server.url),
            "#login-reason",
            refusal,
        )
        .await;
    assert!(!browser.client.source().await.unwrap().contains(&talker));

    // A read token sees the job, but no button that would be refused.
    browser.sign_in(READER).await;
    browser.until_contains("#job-why", "waits for").await;
    assert_eq!(browser.count("button[data-action]").await, 0);
    let url = browser.client.current_url().await.unwrap();
    assert!(
        !url.as_str().contains(READER),
        "the token is not in the URL: {url}"
    );
    // The action itself, sent as the button would, is refused for that token.
    let refused = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0], {method: 'POST', headers: {'Content-Type': 'application/json',
               'Authorization': 'Bearer ' + sessionStorage.getItem('batchctl-token')}, body: '{}'})
               .then(async (r) => done([r.status, (await r.json()).detail]));",
            vec![json!(format!("/v1/jobs/{waiter}/cancel"))],
        )
        .await
        .unwrap();
    assert_eq!(refused[0], json!(403), "{refused}");
    assert!(
        refused[1]
            .as_str()
            .unwrap_or_default()
            .contains("this token has the read scope; this request needs submit"),
        "{refused}"
    );
    assert_eq!(server.job(&waiter)["status"], "PENDING");

    // Forgetting it and signing in with a submit token brings the buttons.
    browser
        .client
        .find(Locator::Id("forget"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.until_contains("#login-reason", refusal).await;
    browser.sign_in(SUBMITTER).await;
    browser.until_contains("#job-summary", "Cancel job").await;
    browser.client.clone().close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_lists_schedules_rules_dead_letters_and_live_events() {
    const SECRET: &str = "whsec_Y29uc29sZVNlY3JldE11c3ROb3RTaG93MDEyMw==";
    let Some(browser) = Browser::start().await else {
        return;
    };
    // The notification's endpoint is a closed loopback port: every delivery fails.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = Server::start_with(
        None,
        &["--notification-allow-cidr".into(), "127.0.0.0/8".into()],
    );
    server.apply_examples();
    server.apply_text(&format!(
        "apiVersion: batchctl/v1\nkind: Schedule\nmetadata: {{name: hourly-hello}}\nspec:\n  scheduleExpression: '@hourly'\n  target: {{jobQueue: default, jobDefinition: hello}}\n---\n\
         apiVersion: batchctl/v1\nkind: EventRule\nmetadata: {{name: greet-signups}}\nspec:\n  eventPattern: {{source: [shop]}}\n  target: {{jobQueue: default, jobDefinition: hello}}\n---\n\
         apiVersion: batchctl/v1\nkind: Notification\nmetadata: {{name: pager}}\nspec:\n  eventPattern: {{source: [batchctl], detail: {{status: [FAILED]}}}}\n  endpoint: http://{closed}/hook\n  secret: {SECRET}\n  retryPolicy: {{maximumRetryAttempts: 0}}\n"
    ));
    server.submit_script("exit 3");
    let url = |path: &str| format!("{}{path}", server.url);

    browser.open(&url("/console/schedules")).await;
    browser
        .until_text(
            "tr[data-schedule=\"hourly-hello\"]",
            "the schedule",
            |text| text.contains("@hourly") && text.contains(":00:00"),
        )
        .await;
    browser
        .visit(&url("/console/rules"), "#rules", "greet-signups")
        .await;

    // The failed job's notification fails once and is a dead letter, redriven with the button.
    browser
        .visit(
            &url("/console/notifications"),
            "#dead-letters",
            "Redrive all",
        )
        .await;
    assert!(!browser.client.source().await.unwrap().contains(SECRET));
    browser
        .click_and_confirm("#dead-letters tbody button[data-action=\"/v1/dlq/redrive\"]")
        .await;
    browser
        .until_contains("#status", "Done: Redrive pager")
        .await;

    // Events: those so far, and one put now appears without a reload (with the job its rule
    // submitted).
    browser
        .visit(&url("/console/events"), "#event-log", "Job State Change")
        .await;
    let output = server.cli(&[
        "events",
        "put",
        "--source",
        "shop",
        "--detail-type",
        "Signup",
        "--detail",
        "{}",
    ]);
    assert!(output.status.success());
    browser
        .until_contains("#event-log", "Signup from shop")
        .await;
    browser.client.clone().close().await.unwrap();
}
