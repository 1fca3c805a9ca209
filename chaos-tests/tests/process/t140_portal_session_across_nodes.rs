use std::time::Duration;

use eventgate_chaos_tests::{init_logging, wait, ClusterOptions, ProcessCluster};

/// `name=value` of the `Set-Cookie` of `name`.
fn cookie_of(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
}

/// The value of the first hidden `csrf` field of a page.
fn csrf_field(page: &str) -> Option<String> {
    let at = page.find("name=\"csrf\" value=\"")? + 19;
    page[at..].split('"').next().map(str::to_owned)
}

/// Three processes: a developer signs up through node 1; the session cookie is good on nodes 2
/// and 3 at once, on the first request (the session is in the replicated state, and a node
/// that has not applied it yet waits for it); signing out through node 3 ends it on node
/// 1. Times are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_sign_in_holds_on_every_node() -> anyhow::Result<()> {
    init_logging();
    let cluster = ProcessCluster::start(ClusterOptions::default()).await?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let base = |id: u64| cluster.nodes[&id].base_url();

    let form = client
        .get(format!("{}/portal/signup", base(1)))
        .send()
        .await?;
    let csrf_cookie =
        cookie_of(&form, "egw_csrf").ok_or_else(|| anyhow::anyhow!("no CSRF cookie"))?;
    let csrf = csrf_field(&form.text().await?).ok_or_else(|| anyhow::anyhow!("no CSRF field"))?;
    let r = client
        .post(format!("{}/portal/signup", base(1)))
        .header("cookie", &csrf_cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "Grace"),
            ("email", "grace@example.com"),
            ("password", "a long enough password"),
        ])
        .send()
        .await?;
    anyhow::ensure!(r.status() == 303, "sign-up: {}", r.status());
    let session =
        cookie_of(&r, "egw_session").ok_or_else(|| anyhow::anyhow!("no session cookie"))?;
    let started = tokio::time::Instant::now();
    let account = |id: u64| {
        let (client, url, session) = (
            client.clone(),
            format!("{}/portal/account", base(id)),
            session.clone(),
        );
        async move {
            let r = client
                .get(url)
                .header("cookie", session)
                .send()
                .await
                .ok()?;
            let status = r.status().as_u16();
            Some((status, r.text().await.ok()?))
        }
    };
    // Read-your-writes behind a load balancer: the very first request on another node, right
    // after the sign-up, is signed in (a node that has not applied the session yet waits for
    // it rather than send the browser to the sign-in page).
    for id in [2, 3] {
        let (status, page) = account(id)
            .await
            .ok_or_else(|| anyhow::anyhow!("node {id} did not answer"))?;
        anyhow::ensure!(
            status == 200 && page.contains("grace@example.com"),
            "the session on node {id} at once: {status}"
        );
    }
    println!(
        "portal: a sign-up through node 1 is signed in on nodes 2 and 3 within {} ms",
        started.elapsed().as_millis()
    );
    // Signing out through node 3 ends the session on node 1.
    let (_, page) = account(3)
        .await
        .ok_or_else(|| anyhow::anyhow!("no account page"))?;
    let token = csrf_field(&page).ok_or_else(|| anyhow::anyhow!("no session CSRF"))?;
    let r = client
        .post(format!("{}/portal/logout", base(3)))
        .header("cookie", &session)
        .form(&[("csrf", token.as_str())])
        .send()
        .await?;
    anyhow::ensure!(r.status() == 303, "sign-out: {}", r.status());
    wait::until(
        "the session to end on node 1",
        Duration::from_secs(5),
        Duration::from_millis(10),
        || async { account(1).await.filter(|(status, _)| *status == 303) },
    )
    .await?;
    Ok(())
}
