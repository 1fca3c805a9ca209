//! The developer portal's catalog and API pages, served by a real node: only published and
//! deprecated APIs are listed, search narrows them, an API's page shows its channels' URLs,
//! schemas, examples, snippets with the real URLs and the plans, escapes what APIs say, and
//! the portal can be moved or turned off.

mod common;

use serde_json::{json, Value};

const SWEET: &[u8] = include_bytes!("fixtures/import/sweet-prod-ws-3.0.yaml");

/// The text of escaped HTML (the entities templates write), to look for content.
fn unescape(html: &str) -> String {
    html.replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#60;", "<")
        .replace("&lt;", "<")
        .replace("&#62;", ">")
        .replace("&gt;", ">")
        .replace("&#38;", "&")
        .replace("&amp;", "&")
}

async fn page(node: &common::TestNode, path: &str) -> (u16, String, reqwest::header::HeaderMap) {
    let r = node
        .client
        .get(format!("{}{path}", node.base))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, r.text().await.unwrap(), headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalog_lists_published_apis_and_their_pages_say_how_to_connect() {
    let node = common::start(
        r#"[topics]
names = ["orders"]
[apis.shop]
description = "Orders of the <script>alert(1)</script> shop"
channels = { orders = "orders" }
tags = ["retail", "e-commerce"]
[plans.gold]
description = "For production"
publish = { count = 100, per = "1m" }
max_connections = 5
approval_required = true
"#,
    )
    .await;
    let r = node
        .client
        .post(format!("{}/admin/apis/import", node.base))
        .body(SWEET)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Created: not in the catalog yet; the configuration's API is (published).
    let (status, catalog, headers) = page(&node, "/portal").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    // No inline script or style may run: the portal's own are files.
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    for (file, kind) in [
        ("portal.css", "text/css"),
        ("portal.js", "text/javascript"),
        ("try.js", "text/javascript"),
    ] {
        assert!(catalog.contains(&format!("/portal/static/{file}")) || file == "try.js");
        let r = reqwest::get(format!("{}/portal/static/{file}", node.base))
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{file}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with(kind));
    }
    assert_eq!(
        reqwest::get(format!("{}/portal/static/nothing.js", node.base))
            .await
            .unwrap()
            .status(),
        404
    );
    assert!(!catalog.contains("<script>\n"), "no inline script");
    assert!(catalog.contains("/portal/apis/shop"), "{catalog}");
    assert!(!catalog.contains("sweet-prod-app"));
    // What an API says is text, never markup.
    assert!(!catalog.contains("<script>alert(1)</script>"));
    assert!(unescape(&catalog).contains("<script>alert(1)</script>"));
    assert_eq!(page(&node, "/portal/apis/sweet-prod-app").await.0, 404);

    let r = node
        .client
        .put(format!("{}/admin/apis/sweet-prod-app/lifecycle", node.base))
        .json(&json!({ "state": "published" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, catalog, _) = page(&node, "/portal/").await;
    assert!(catalog.contains("sweet-prod-app"));
    // Search: every word, anywhere in name, description or channels.
    let (_, found, _) = page(&node, "/portal?q=production+line").await;
    assert!(found.contains("sweet-prod-app") && !found.contains("/portal/apis/shop"));
    let (_, none, _) = page(&node, "/portal?q=nothing-like-it").await;
    assert!(none.contains("No published API matches"), "{none}");
    // … and tags, each a link to its search.
    let (_, tagged, _) = page(&node, "/portal?q=E-Commerce").await;
    assert!(tagged.contains("/portal/apis/shop") && !tagged.contains("sweet-prod-app"));
    assert!(tagged.contains("href=\"/portal?q=retail\""), "{tagged}");

    let (status, api, _) = page(&node, "/portal/apis/sweet-prod-app").await;
    assert_eq!(status, 200);
    let api = unescape(&api);
    let ws = node.base.replace("http://", "ws://");
    for want in [
        // Its channel's URLs under its base path, with the real address.
        format!("{ws}/sweet-prod-app/1.0.0/ws/production"),
        format!("{}/sweet-prod-app/1.0.0/sse/production", node.base),
        format!(
            "{}/sweet-prod-app/1.0.0/webhook-receiver?topic=production",
            node.base
        ),
        // OAuth2: the token URL and a snippet getting a token.
        format!("{}/oauth2/token", node.base),
        "grant_type=client_credentials".to_owned(),
        // The message's schema, pretty-printed.
        "\"minimum\": 1".to_owned(),
        // Snippets.
        "wscat -c".to_owned(),
        "new EventSource(".to_owned(),
        "websockets.connect(".to_owned(),
        "X-Hub-Signature".to_owned(),
        // The plan and its limits.
        "100 messages published per 1m".to_owned(),
        "5 WebSocket/SSE connections at once".to_owned(),
        "wait for an administrator".to_owned(),
        "/apis/sweet-prod-app/asyncapi.yaml".to_owned(),
    ] {
        assert!(api.contains(&want), "the page lacks {want}");
    }
    // The download links work.
    assert_eq!(
        node.get_status("/apis/sweet-prod-app/asyncapi.yaml").await,
        200
    );

    // Deprecated: still listed, with the notice.
    let r = node
        .client
        .put(format!("{}/admin/apis/sweet-prod-app/lifecycle", node.base))
        .json(&json!({ "state": "deprecated", "sunset": "2027-06-30T00:00:00Z" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, api, _) = page(&node, "/portal/apis/sweet-prod-app").await;
    assert!(api.contains("deprecated") && api.contains("2027-06-30T00:00:00Z"));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_moves_or_turns_off() {
    let node = common::start("[portal]\npath = \"/developers\"\ntitle = \"Acme events\"\n").await;
    let (status, body, _) = page(&node, "/developers").await;
    assert_eq!(status, 200);
    assert!(body.contains("Acme events"));
    assert_eq!(page(&node, "/portal").await.0, 404);
    node.stop().await;

    let node = common::start("[portal]\nenabled = false\n").await;
    assert_eq!(page(&node, "/portal").await.0, 404);
    node.stop().await;
}

/// A client that does not follow redirects (the sign-in answers carry the cookies).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The `Set-Cookie` of `name` in `response`, whole.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// `name=value` of a `Set-Cookie`.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

/// The form's CSRF token and the cookie that goes with it.
async fn form_csrf(node: &common::TestNode, path: &str) -> (String, String) {
    let r = browser()
        .get(format!("{}{path}", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = pair(&set_cookie(&r, "egw_csrf").expect("a CSRF cookie"));
    let token = cookie.trim_start_matches("egw_csrf=").to_owned();
    let body = r.text().await.unwrap();
    assert!(body.contains(&format!("name=\"csrf\" value=\"{token}\"")));
    (token, cookie)
}

async fn post_form(
    node: &common::TestNode,
    path: &str,
    cookie: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    browser()
        .post(format!("{}{path}", node.base))
        .header("cookie", cookie)
        .form(form)
        .send()
        .await
        .unwrap()
}

async fn sign_in(node: &common::TestNode, email: &str, password: &str) -> reqwest::Response {
    let (csrf, cookie) = form_csrf(node, "/portal/login").await;
    post_form(
        node,
        "/portal/login",
        &cookie,
        &[("csrf", &csrf), ("email", email), ("password", password)],
    )
    .await
}

/// The session's CSRF token, from a page rendered for it.
async fn session_csrf(node: &common::TestNode, session: &str) -> String {
    let body = browser()
        .get(format!("{}/portal/account", node.base))
        .header("cookie", session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = body
        .find("name=\"csrf\" value=\"")
        .expect("a form of the session")
        + 19;
    body[at..].split('"').next().unwrap().to_owned()
}

/// Sign up, cookie flags, CSRF on every form, sign out, sign in, wrong password, the sign-in
/// rate limit, and a disabled account losing its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn developers_sign_up_sign_in_and_out() {
    let node = common::start("").await;
    let (csrf, cookie) = form_csrf(&node, "/portal/signup").await;
    let signup = |form: Vec<(&'static str, String)>| {
        let (node_base, cookie) = (node.base.clone(), cookie.clone());
        async move {
            browser()
                .post(format!("{node_base}/portal/signup"))
                .header("cookie", cookie)
                .form(&form)
                .send()
                .await
                .unwrap()
        }
    };
    // No CSRF token, or another one: refused, nothing made.
    let r = signup(vec![
        ("name", "Ada".into()),
        ("email", "ada@example.com".into()),
        ("password", "a long enough password".into()),
    ])
    .await;
    assert_eq!(r.status(), 403);
    let r = signup(vec![
        ("csrf", "forged".into()),
        ("name", "Ada".into()),
        ("email", "ada@example.com".into()),
        ("password", "a long enough password".into()),
    ])
    .await;
    assert_eq!(r.status(), 403);
    let r = signup(vec![
        ("csrf", csrf.clone()),
        ("name", "Ada".into()),
        ("email", "ada@example.com".into()),
        ("password", "short".into()),
    ])
    .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("at least 12 characters"));
    let r = signup(vec![
        ("csrf", csrf.clone()),
        ("name", "Ada".into()),
        ("email", "Ada@Example.com".into()),
        ("password", "a long enough password".into()),
    ])
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/portal/account");
    let session = set_cookie(&r, "egw_session").expect("a session cookie");
    for flag in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/portal",
        "Max-Age=43200",
    ] {
        assert!(session.contains(flag), "{session} lacks {flag}");
    }
    assert!(!session.contains("Secure"), "not https here");
    let session = pair(&session);
    let accounts = node.get_json("/admin/accounts").await;
    assert_eq!(accounts["accounts"][0]["email"], "ada@example.com");
    assert!(!accounts.to_string().contains("argon2"), "never the hash");
    // The same email again: refused.
    let r = signup(vec![
        ("csrf", csrf.clone()),
        ("name", "Eve".into()),
        ("email", "ada@example.com".into()),
        ("password", "another long password".into()),
    ])
    .await;
    assert_eq!(r.status(), 400);

    let account = browser()
        .get(format!("{}/portal/account", node.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(account.status(), 200);
    let page = account.text().await.unwrap();
    assert!(page.contains("ada@example.com") && page.contains("Sign out"));

    // Sign out needs the session's CSRF token; then the cookie is worth nothing.
    let r = post_form(&node, "/portal/logout", &session, &[("csrf", "forged")]).await;
    assert_eq!(r.status(), 403);
    let token = session_csrf(&node, &session).await;
    let r = post_form(&node, "/portal/logout", &session, &[("csrf", &token)]).await;
    assert_eq!(r.status(), 303);
    assert!(set_cookie(&r, "egw_session").unwrap().contains("Max-Age=0"));
    let r = browser()
        .get(format!("{}/portal/account", node.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "signed out");

    // Sign in: a wrong password, then the right one.
    let r = sign_in(&node, "ada@example.com", "not the password").await;
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("Wrong email or password"));
    let r = sign_in(&node, "ADA@example.com", "a long enough password").await;
    assert_eq!(r.status(), 303);
    let session = pair(&set_cookie(&r, "egw_session").unwrap());

    // Disabled by an administrator: the session ends, sign-in is refused.
    let id = node.get_json("/admin/accounts").await["accounts"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = node
        .client
        .put(format!("{}/admin/accounts/{id}", node.base))
        .json(&json!({ "state": "disabled" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = browser()
        .get(format!("{}/portal/account", node.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "the session ended");
    assert_eq!(
        sign_in(&node, "ada@example.com", "a long enough password")
            .await
            .status(),
        403
    );

    // Ten attempts per email per five minutes on a node.
    let mut limited = false;
    for _ in 0..12 {
        if sign_in(&node, "ada@example.com", "guess").await.status() == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "sign-in attempts are limited");
    node.stop().await;
}

/// With `portal.signup = "approval"`, an account waits for an administrator; `closed` makes
/// none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_with_approval_or_closed() {
    let node = common::start("[portal]\nsignup = \"approval\"\n").await;
    let (csrf, cookie) = form_csrf(&node, "/portal/signup").await;
    let r = post_form(
        &node,
        "/portal/signup",
        &cookie,
        &[
            ("csrf", &csrf),
            ("name", "Bo"),
            ("email", "bo@example.com"),
            ("password", "a long enough password"),
        ],
    )
    .await;
    assert_eq!(r.status(), 202);
    assert!(set_cookie(&r, "egw_session").is_none());
    assert_eq!(
        sign_in(&node, "bo@example.com", "a long enough password")
            .await
            .status(),
        403
    );
    let id = node.get_json("/admin/accounts").await["accounts"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = node
        .client
        .put(format!("{}/admin/accounts/{id}", node.base))
        .json(&json!({ "state": "active" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        sign_in(&node, "bo@example.com", "a long enough password")
            .await
            .status(),
        303
    );
    node.stop().await;

    let node = common::start("[portal]\nsignup = \"closed\"\n").await;
    assert_eq!(node.get_status("/portal/signup").await, 403);
    node.stop().await;
}

/// Where sign-up is closed, accounts come by invitation: an administrator (admin API, or the
/// portal's administration page) makes a one-time link for an email address; whoever opens it
/// chooses a name and password and is signed in, with the invited role; the link works once,
/// and a withdrawn one not at all. The operator signs in to the portal with the admin token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_open_accounts_and_the_operator_signs_in_with_the_admin_token() {
    const TOKEN: &str = "an-admin-token-of-the-test";
    let node = common::start(&format!(
        "[portal]\nsignup = \"closed\"\n[admin]\ntoken = \"{TOKEN}\"\n"
    ))
    .await;
    let invite = |body: Value| {
        let (client, base) = (node.client.clone(), node.base.clone());
        async move {
            let r = client
                .post(format!("{base}/admin/accounts/invitations"))
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // Bad requests name the field.
    for (body, field) in [
        (json!({ "email": "not an address" }), "email"),
        (
            json!({ "email": "bo@example.com", "role": "owner" }),
            "role",
        ),
        (
            json!({ "email": "bo@example.com", "expires_in": "31d" }),
            "expires_in",
        ),
    ] {
        let (status, problem) = invite(body).await;
        assert_eq!(status, 400, "{problem}");
        assert_eq!(problem["field"], field, "{problem}");
    }
    let (status, made) = invite(json!({ "email": "Bo@Example.com", "expires_in": "2d" })).await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["email"], "bo@example.com");
    assert_eq!(made["role"], "developer");
    let url = made["url"].as_str().unwrap().to_owned();
    let token = url.split("token=").nth(1).unwrap().to_owned();
    let listed = node
        .client
        .get(format!("{}/admin/accounts/invitations", node.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listed.contains("bo@example.com"), "{listed}");
    assert!(!listed.contains(&token), "the link is shown once");

    // Bo opens the link, chooses a name and password, and is signed in.
    let path = format!("/portal/invitation?token={token}");
    let r = browser()
        .get(format!("{}{path}", node.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let cookie = pair(&set_cookie(&r, "egw_csrf").unwrap());
    let csrf = cookie.trim_start_matches("egw_csrf=").to_owned();
    assert!(r.text().await.unwrap().contains("bo@example.com"));
    let accept = |password: &'static str, token: String| {
        let (cookie, csrf) = (cookie.clone(), csrf.clone());
        let node = &node;
        async move {
            post_form(
                node,
                "/portal/invitation",
                &cookie,
                &[
                    ("csrf", &csrf),
                    ("token", &token),
                    ("name", "Bo"),
                    ("password", password),
                ],
            )
            .await
        }
    };
    let r = accept("short", token.clone()).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("12 characters"));
    let r = accept("a long enough password", token.clone()).await;
    assert_eq!(r.status(), 303);
    let session = pair(&set_cookie(&r, "egw_session").expect("signed in"));
    let page = browser()
        .get(format!("{}/portal/account", node.base))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("bo@example.com"), "{page}");
    // Once only.
    assert_eq!(
        accept("a long enough password", token.clone())
            .await
            .status(),
        404
    );
    assert_eq!(node.get_status(&path).await, 404);
    // No invitation for an email that has an account.
    let (status, _) = invite(json!({ "email": "bo@example.com" })).await;
    assert_eq!(status, 409);
    // A withdrawn invitation opens nothing.
    let (_, made) = invite(json!({ "email": "cy@example.com" })).await;
    let id = made["id"].as_str().unwrap();
    let r = node
        .client
        .delete(format!("{}/admin/accounts/invitations/{id}", node.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cy_token = made["url"]
        .as_str()
        .unwrap()
        .split("token=")
        .nth(1)
        .unwrap();
    assert_eq!(
        node.get_status(&format!("/portal/invitation?token={cy_token}"))
            .await,
        404
    );

    // The operator: `admin` and the admin token, and nothing else.
    assert_eq!(sign_in(&node, "admin", "a wrong token").await.status(), 401);
    let r = sign_in(&node, "admin", TOKEN).await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/portal/admin");
    let operator = pair(&set_cookie(&r, "egw_session").unwrap());
    let operator_csrf = session_csrf(&node, &operator).await;
    // ... who invites an administrator from the portal.
    let r = browser()
        .post(format!("{}/portal/admin/invite", node.base))
        .header("cookie", &operator)
        .form(&[
            ("csrf", operator_csrf.as_str()),
            ("email", "dee@example.com"),
            ("role", "admin"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let link = page
        .split("/portal/invitation?token=")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect("the link on the page")
        .to_owned();
    let page = browser()
        .get(format!("{}/portal/invitation?token={link}", node.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("as an administrator"), "{page}");
    // Without the form's CSRF token nothing happens.
    let r = post_form(
        &node,
        "/portal/invitation",
        "",
        &[
            ("token", &link),
            ("name", "Dee"),
            ("password", "a long enough password"),
        ],
    )
    .await;
    assert_eq!(r.status(), 403);
    node.stop().await;
}

/// Every state-changing form on every page an administrator (who sees the most forms) can
/// reach — found by reading the pages, so a form added later is covered too — refuses a
/// request without the session's CSRF token, or with another session's, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_of_every_page_needs_the_session_csrf_token() {
    const TOKEN: &str = "an-admin-token-of-the-test";
    let node = common::start(&format!(
        "[topics]\nnames = [\"orders\"]\n[apis.shop]\nchannels = {{ orders = \"orders\" }}\n[plans.gold]\napproval_required = true\n[admin]\ntoken = \"{TOKEN}\"\n"
    ))
    .await;
    let admin_json = |path: &str| {
        let request = node
            .client
            .get(format!("{}{path}", node.base))
            .bearer_auth(TOKEN);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let r = sign_in(&node, "admin", TOKEN).await;
    assert_eq!(r.status(), 303);
    let admin = pair(&set_cookie(&r, "egw_session").unwrap());
    let admin_csrf = session_csrf(&node, &admin).await;
    let (_, other_csrf) = signed_up(&node, "other@example.com").await;
    let post = |path: &str, form: Vec<(&str, &str)>| {
        let (base, admin, path) = (node.base.clone(), admin.clone(), path.to_owned());
        let form: Vec<(String, String)> = form
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        async move {
            browser()
                .post(format!("{base}{path}"))
                .header("cookie", admin)
                .form(&form)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Something on every page: an application with a key, a secret and a pending request,
    // an open invitation.
    let csrf = admin_csrf.as_str();
    assert_eq!(
        post("/portal/apps", vec![("csrf", csrf), ("id", "ops-app")]).await,
        303
    );
    for action in ["keys", "secrets"] {
        assert_eq!(
            post(
                &format!("/portal/apps/ops-app/{action}"),
                vec![("csrf", csrf)]
            )
            .await,
            200
        );
    }
    assert_eq!(
        post(
            "/portal/apps/ops-app/subscribe",
            vec![("csrf", csrf), ("api", "shop"), ("plan", "gold")]
        )
        .await,
        200
    );
    assert_eq!(
        post(
            "/portal/admin/invite",
            vec![("csrf", csrf), ("email", "x@example.com")]
        )
        .await,
        200
    );
    let before = admin_json("/admin/applications/ops-app").await;
    assert_eq!(before["keys"].as_array().map(Vec::len), Some(1), "{before}");
    let mut actions = std::collections::BTreeSet::new();
    for page in [
        "/portal",
        "/portal/apis/shop",
        "/portal/apps",
        "/portal/apps/ops-app",
        "/portal/webhooks",
        "/portal/admin",
        "/portal/account",
    ] {
        let body = browser()
            .get(format!("{}{page}", node.base))
            .header("cookie", &admin)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for form in body.split("<form ").skip(1) {
            let head = form.split('>').next().unwrap();
            if !head.contains("method=\"post\"") {
                continue;
            }
            let action = head
                .split("action=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_else(|| panic!("a form without an action on {page}: {head}"));
            actions.insert(action.to_owned());
        }
    }
    // What the walk must have found, at least.
    for expected in [
        "/portal/logout",
        "/portal/apps",
        "/portal/apps/ops-app/edit",
        "/portal/apps/ops-app/delete",
        "/portal/apps/ops-app/revoke-key",
        "/portal/apps/ops-app/rotate-key",
        "/portal/apps/ops-app/token",
        "/portal/admin/approve",
        "/portal/admin/invite",
        "/portal/admin/withdraw",
        "/portal/admin/account",
        "/portal/admin/lifecycle",
        "/portal/account/password",
    ] {
        assert!(
            actions.contains(expected),
            "{expected} not among {actions:?}"
        );
    }
    for action in &actions {
        for csrf in [None, Some(other_csrf.as_str())] {
            let mut form = vec![
                ("id", "ops-app"),
                ("name", "changed"),
                ("email", "y@example.com"),
            ];
            form.extend(csrf.map(|c| ("csrf", c)));
            assert_eq!(post(action, form).await, 403, "{action} with {csrf:?}");
        }
    }
    // Nothing changed: the application, its request, the session.
    assert_eq!(
        admin_json("/admin/applications/ops-app").await["keys"],
        before["keys"]
    );
    assert_eq!(
        admin_json("/admin/applications/ops-app").await["name"],
        Value::Null
    );
    assert_eq!(
        admin_json("/admin/applications/ops-app/access").await["access"][0]["state"],
        "pending"
    );
    assert_eq!(
        session_csrf(&node, &admin).await,
        admin_csrf,
        "still signed in"
    );
    node.stop().await;
}

/// Signs up `email` (open sign-up); answers the session cookie and its CSRF token.
async fn signed_up(node: &common::TestNode, email: &str) -> (String, String) {
    let (csrf, cookie) = form_csrf(node, "/portal/signup").await;
    let r = post_form(
        node,
        "/portal/signup",
        &cookie,
        &[
            ("csrf", &csrf),
            ("name", email),
            ("email", email),
            ("password", "a long enough password"),
        ],
    )
    .await;
    assert_eq!(r.status(), 303);
    let session = pair(&set_cookie(&r, "egw_session").unwrap());
    let token = session_csrf(node, &session).await;
    (session, token)
}

/// The credential a page shows once.
fn shown(page: &str) -> String {
    let at = page
        .find("id=\"shown-value\">")
        .expect("a credential shown")
        + 17;
    page[at..].split('<').next().unwrap().to_owned()
}

/// A developer's applications: create one, subscribe it to an API under a plan, issue an API
/// key and a client secret, get a token, use both on the API; another developer can neither
/// see nor change it; forms need the session's CSRF token; deleting it ends its credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn developers_manage_their_own_applications() {
    let node = common::start(
        "[topics]\nnames = [\"orders\"]\n[apis.shop]\nchannels = { orders = \"orders\" }\n[plans.free]\n[plans.gold]\napproval_required = true\n",
    )
    .await;
    let (ada, ada_csrf) = signed_up(&node, "ada@example.com").await;
    let (eve, eve_csrf) = signed_up(&node, "eve@example.com").await;
    let post = |session: &str, path: &str, form: Vec<(&str, &str)>| {
        let (base, session, path) = (node.base.clone(), session.to_owned(), path.to_owned());
        let form: Vec<(String, String)> = form
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        async move {
            let r = browser()
                .post(format!("{base}{path}"))
                .header("cookie", session)
                .form(&form)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // Without the session's CSRF token: refused.
    assert_eq!(
        post(&ada, "/portal/apps", vec![("id", "ada-app")]).await.0,
        403
    );
    assert_eq!(
        post(
            &ada,
            "/portal/apps",
            vec![("csrf", &eve_csrf), ("id", "ada-app")]
        )
        .await
        .0,
        403
    );
    let (status, _) = post(
        &ada,
        "/portal/apps",
        vec![
            ("csrf", &ada_csrf),
            ("id", "ada-app"),
            ("description", "Ada's"),
        ],
    )
    .await;
    assert_eq!(status, 303);
    // The id is taken for everyone else.
    let (status, page) = post(
        &eve,
        "/portal/apps",
        vec![("csrf", &eve_csrf), ("id", "ada-app")],
    )
    .await;
    assert_eq!(status, 400);
    assert!(page.contains("is taken"));

    // Eve cannot see Ada's application, nor act on it (404 as if it did not exist).
    let get = |session: &str, path: &str| {
        let (base, session, path) = (node.base.clone(), session.to_owned(), path.to_owned());
        async move {
            let r = browser()
                .get(format!("{base}{path}"))
                .header("cookie", session)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get(&eve, "/portal/apps/ada-app").await.0, 404);
    assert!(!get(&eve, "/portal/apps").await.1.contains("ada-app"));
    for action in ["keys", "secrets", "token", "edit", "delete"] {
        let (status, _) = post(
            &eve,
            &format!("/portal/apps/ada-app/{action}"),
            vec![("csrf", &eve_csrf), ("name", "taken over")],
        )
        .await;
        assert_eq!(status, 404, "{action}");
    }
    // Nor have the API's code filled in with it: the page ignores an application not hers.
    let (_, api_page) = get(&eve, "/portal/apis/shop?app=ada-app").await;
    assert!(!api_page.contains("application ada-app"), "{api_page}");
    // Renamed by its owner; the id stays, and an over-long name is refused with the reason.
    let (status, _) = post(
        &ada,
        "/portal/apps/ada-app/edit",
        vec![
            ("csrf", &ada_csrf),
            ("name", "Ada's client"),
            ("description", "reads orders"),
        ],
    )
    .await;
    assert_eq!(status, 303, "back to the application's page");
    let (_, app_page) = get(&ada, "/portal/apps/ada-app").await;
    assert!(
        app_page.contains("Ada&#39;s client") || app_page.contains("Ada&#x27;s client"),
        "{app_page}"
    );
    assert!(app_page.contains("reads orders"));
    let long = "n".repeat(101);
    let (status, page) = post(
        &ada,
        "/portal/apps/ada-app/edit",
        vec![("csrf", &ada_csrf), ("name", &long)],
    )
    .await;
    assert_eq!(status, 400);
    assert!(page.contains("100 characters at most"), "{page}");
    let (_, api_page) = get(&ada, "/portal/apis/shop?app=ada-app").await;
    assert!(api_page.contains("application ada-app"), "{api_page}");

    // Subscribe under the free plan (approved at once) and under gold (waits for approval).
    let (status, page) = post(
        &ada,
        "/portal/apps/ada-app/subscribe",
        vec![("csrf", &ada_csrf), ("api", "shop"), ("plan", "free")],
    )
    .await;
    assert_eq!(status, 200);
    assert!(page.contains("under plan free: approved"), "{page}");
    // An API key, shown once, that the API takes.
    let (_, page) = post(&ada, "/portal/apps/ada-app/keys", vec![("csrf", &ada_csrf)]).await;
    let key = shown(&page);
    assert!(key.starts_with("egk_"));
    assert!(
        !get(&ada, "/portal/apps/ada-app").await.1.contains(&key),
        "shown once"
    );
    let r = node
        .client
        .post(format!("{}/webhook-receiver?topic=orders", node.base))
        .header("x-api-key", &key)
        .body("with the key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // Rotation: a new key; the old one keeps working for the overlap (24 h), or stops at once.
    let publish_with = |key: String| {
        let request = node
            .client
            .post(format!("{}/webhook-receiver?topic=orders", node.base))
            .header("x-api-key", key)
            .body("rotating");
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let (_, page) = post(
        &ada,
        "/portal/apps/ada-app/rotate-key",
        vec![("csrf", &ada_csrf), ("overlap", "24h")],
    )
    .await;
    let second = shown(&page);
    assert_eq!(publish_with(second.clone()).await, 202);
    assert_eq!(
        publish_with(key.clone()).await,
        202,
        "the old key during the overlap"
    );
    let (_, page) = post(
        &ada,
        "/portal/apps/ada-app/rotate-key",
        vec![("csrf", &ada_csrf), ("overlap", "0s")],
    )
    .await;
    let third = shown(&page);
    assert_eq!(publish_with(third.clone()).await, 202);
    assert_eq!(
        publish_with(key.clone()).await,
        401,
        "no overlap: the others stop"
    );
    assert_eq!(publish_with(second).await, 401);
    let key = third;
    // A token needs a client secret first; then it works.
    let (status, page) = post(
        &ada,
        "/portal/apps/ada-app/token",
        vec![("csrf", &ada_csrf)],
    )
    .await;
    assert_eq!(status, 400);
    assert!(page.contains("client secret first"));
    let (_, page) = post(
        &ada,
        "/portal/apps/ada-app/secrets",
        vec![("csrf", &ada_csrf)],
    )
    .await;
    assert!(shown(&page).starts_with("egcs_"));
    let (_, page) = post(
        &ada,
        "/portal/apps/ada-app/token",
        vec![("csrf", &ada_csrf)],
    )
    .await;
    let token = shown(&page);
    let r = node
        .client
        .post(format!("{}/webhook-receiver?topic=orders", node.base))
        .bearer_auth(&token)
        .body("with the token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // Try it: the API's page offers the application; the try page carries a token of the
    // application (scoped to the API) and the stream's URL; Eve cannot try with Ada's app.
    let (_, page) = get(&ada, "/portal/apis/shop").await;
    assert!(page.contains("Open a live stream") && page.contains("<option value=\"ada-app\">"));
    assert_eq!(
        post(
            &ada,
            "/portal/apis/shop/try",
            vec![("app", "ada-app"), ("channel", "orders")]
        )
        .await
        .0,
        403
    );
    assert_eq!(
        post(
            &eve,
            "/portal/apis/shop/try",
            vec![
                ("csrf", &eve_csrf),
                ("app", "ada-app"),
                ("channel", "orders")
            ]
        )
        .await
        .0,
        404
    );
    let (status, page) = post(
        &ada,
        "/portal/apis/shop/try",
        vec![
            ("csrf", &ada_csrf),
            ("app", "ada-app"),
            ("channel", "orders"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains(&format!("data-sse=\"{}/sse/orders\"", node.base)),
        "{page}"
    );
    let at = page.find("data-token=\"").unwrap() + 12;
    let try_token = page[at..].split('"').next().unwrap().to_owned();
    let r = node
        .client
        .post(format!("{}/webhook-receiver?topic=orders", node.base))
        .bearer_auth(&try_token)
        .body("from the try page")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    // Deleted: its key no longer works.
    let (status, _) = post(
        &ada,
        "/portal/apps/ada-app/delete",
        vec![("csrf", &ada_csrf)],
    )
    .await;
    assert_eq!(status, 303);
    let r = node
        .client
        .post(format!("{}/webhook-receiver?topic=orders", node.base))
        .header("x-api-key", &key)
        .body("after")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    node.stop().await;
}

/// The administrators' pages: a developer gets 403; an administrator (made through the admin
/// API) approves a subscription request, moves an API through its lifecycle and disables an
/// account, each form with the session's CSRF token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_approve_requests_lifecycles_and_accounts() {
    let node = common::start(
        "[topics]\nnames = [\"orders\"]\n[apis.shop]\nchannels = { orders = \"orders\" }\n[plans.gold]\napproval_required = true\n",
    )
    .await;
    let (dev, dev_csrf) = signed_up(&node, "dev@example.com").await;
    let (boss, _) = signed_up(&node, "boss@example.com").await;
    let get = |session: &str, path: &str| {
        let (base, session, path) = (node.base.clone(), session.to_owned(), path.to_owned());
        async move {
            let r = browser()
                .get(format!("{base}{path}"))
                .header("cookie", session)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let post = |session: &str, path: &str, form: Vec<(&str, &str)>| {
        let (base, session, path) = (node.base.clone(), session.to_owned(), path.to_owned());
        let form: Vec<(String, String)> = form
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        async move {
            let r = browser()
                .post(format!("{base}{path}"))
                .header("cookie", session)
                .form(&form)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(get(&dev, "/portal/admin").await.0, 403);
    assert_eq!(
        post(
            &dev,
            "/portal/admin/lifecycle",
            vec![("csrf", &dev_csrf), ("api", "shop"), ("state", "retired")]
        )
        .await
        .0,
        403
    );
    // A developer's request, waiting.
    assert_eq!(
        post(
            &dev,
            "/portal/apps",
            vec![("csrf", &dev_csrf), ("id", "dev-app")]
        )
        .await
        .0,
        303
    );
    let (_, page) = post(
        &dev,
        "/portal/apps/dev-app/subscribe",
        vec![("csrf", &dev_csrf), ("api", "shop"), ("plan", "gold")],
    )
    .await;
    assert!(page.contains("waiting for approval"));

    let accounts = node.get_json("/admin/accounts").await;
    let id_of = |email: &str| {
        accounts["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["email"] == email)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let r = node
        .client
        .put(format!(
            "{}/admin/accounts/{}",
            node.base,
            id_of("boss@example.com")
        ))
        .json(&json!({ "role": "admin" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, page) = get(&boss, "/portal/admin").await;
    assert_eq!(status, 200);
    assert!(page.contains("dev-app") && page.contains("Approve"));
    let boss_csrf = session_csrf(&node, &boss).await;
    // Without the token: refused.
    assert_eq!(
        post(
            &boss,
            "/portal/admin/approve",
            vec![("app", "dev-app"), ("api", "shop")]
        )
        .await
        .0,
        403
    );
    assert_eq!(
        post(
            &boss,
            "/portal/admin/approve",
            vec![("csrf", &boss_csrf), ("app", "dev-app"), ("api", "shop")]
        )
        .await
        .0,
        303
    );
    assert!(get(&dev, "/portal/apps/dev-app")
        .await
        .1
        .contains("under plan gold: approved"));
    // Lifecycle: deprecated, as through the admin API.
    assert_eq!(
        post(
            &boss,
            "/portal/admin/lifecycle",
            vec![
                ("csrf", &boss_csrf),
                ("api", "shop"),
                ("state", "deprecated")
            ]
        )
        .await
        .0,
        303
    );
    assert_eq!(
        node.get_json("/admin/apis/shop").await["lifecycle"],
        "deprecated"
    );
    // A move the lifecycle does not allow is refused with the reason.
    let (status, page) = post(
        &boss,
        "/portal/admin/lifecycle",
        vec![("csrf", &boss_csrf), ("api", "shop"), ("state", "created")],
    )
    .await;
    assert_eq!(status, 400, "{page}");
    // Disabling the developer ends their session.
    let dev_id = id_of("dev@example.com");
    assert_eq!(
        post(
            &boss,
            "/portal/admin/account",
            vec![("csrf", &boss_csrf), ("id", &dev_id), ("state", "disabled")]
        )
        .await
        .0,
        303
    );
    assert_eq!(get(&dev, "/portal/apps").await.0, 303);
    node.stop().await;
}

/// "My webhooks": the WebSub subscriptions of a developer's applications, with their dead
/// letters and re-drive; another developer sees none of it and cannot re-drive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_webhooks_lists_subscriptions_and_redrives_dead_letters() {
    use axum::http::Method;
    use common::callback::CallbackServer;
    let node = common::start(
        "[topics]\nnames = [\"orders\"]\n[websub]\nallow_private_callbacks = true\nretry_base = \"20ms\"\nretry_max = \"100ms\"\nmax_attempts = 2\n[apis.shop]\nchannels = { orders = \"orders\" }\nsecurity = [\"api_key\"]\n[plans.free]\n",
    )
    .await;
    let (dev, csrf) = signed_up(&node, "dev@example.com").await;
    let (other, other_csrf) = signed_up(&node, "other@example.com").await;
    let post = |session: &str, path: &str, form: Vec<(&str, &str)>| {
        let (base, session, path) = (node.base.clone(), session.to_owned(), path.to_owned());
        let form: Vec<(String, String)> = form
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        async move {
            let r = browser()
                .post(format!("{base}{path}"))
                .header("cookie", session)
                .form(&form)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(
        post(&dev, "/portal/apps", vec![("csrf", &csrf), ("id", "hooks")])
            .await
            .0,
        303
    );
    post(
        &dev,
        "/portal/apps/hooks/subscribe",
        vec![("csrf", &csrf), ("api", "shop"), ("plan", "free")],
    )
    .await;
    let key = shown(
        &post(&dev, "/portal/apps/hooks/keys", vec![("csrf", &csrf)])
            .await
            .1,
    );

    let cb = CallbackServer::start().await;
    let callback = cb.url("/dlq");
    let r = node
        .client
        .post(format!("{}/hub", node.base))
        .header("x-api-key", &key)
        .form(&[
            ("hub.mode", "subscribe"),
            ("hub.topic", "orders"),
            ("hub.callback", callback.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    common::websub::wait_active(&node, &callback).await;
    cb.always("/dlq", Some(500));
    let r = node
        .client
        .post(format!("{}/webhook-receiver?topic=orders", node.base))
        .header("x-api-key", &key)
        .header("content-type", "text/plain")
        .body("doomed")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let letter = loop {
        let letters = node.get_json("/admin/dead-letters").await;
        if let Some(first) = letters.as_array().and_then(|l| l.first()).cloned() {
            break first;
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let (partition, offset) = (
        letter["partition"].to_string(),
        letter["offset"].to_string(),
    );
    let subscription = letter["subscription"].as_str().unwrap().to_owned();

    let page = browser()
        .get(format!("{}/portal/webhooks", node.base))
        .header("cookie", &dev)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&callback) && page.contains("Dead letters") && page.contains("Re-drive"),
        "{page}"
    );
    // How it is signed, and how far delivery has come.
    assert!(page.contains("signed: unsigned (no secret)"), "{page}");
    assert!(page.contains("partition 0: offsets before "), "{page}");
    let other_page = browser()
        .get(format!("{}/portal/webhooks", node.base))
        .header("cookie", &other)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!other_page.contains(&callback));
    let redrive = |csrf: &str| {
        vec![
            ("csrf", csrf.to_owned()),
            ("subscription", subscription.clone()),
            ("partition", partition.clone()),
            ("offset", offset.clone()),
        ]
    };
    let other_form = redrive(&other_csrf);
    let (status, _) = post(
        &other,
        "/portal/webhooks/redrive",
        other_form.iter().map(|(k, v)| (*k, v.as_str())).collect(),
    )
    .await;
    assert_eq!(status, 404);
    // The callback recovers; the owner re-drives the dead letter.
    cb.always("/dlq", None);
    let dev_form = redrive(&csrf);
    let (status, page) = post(
        &dev,
        "/portal/webhooks/redrive",
        dev_form.iter().map(|(k, v)| (*k, v.as_str())).collect(),
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("the callback took it"), "{page}");
    let posts = cb.requests(&Method::POST, "/dlq");
    assert_eq!(posts.last().unwrap().body.as_ref(), b"doomed");
    node.stop().await;
}
