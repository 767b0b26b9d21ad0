//! The desk's console over HTTP (issue 20): accounts and roles on the admin
//! API, sign-in with its cookie, CSRF and rate limit, the pages and every
//! action, under the account's own name. `browser` drives the same console
//! in Chromium.

use super::*;

mod browser;
mod webdriver;

/// A browser-like client of the console: it keeps the session cookie and
/// follows no redirect, so a test sees each answer.
pub(super) struct Desk {
    http: reqwest::Client,
    base: String,
    session: Option<String>,
}

/// An answer as a test reads it.
pub(super) struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    /// The page's CSRF token (the first form's).
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF field in: {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Every `Set-Cookie` line.
    pub fn cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }
}

impl Desk {
    pub fn new(admin: SocketAddr) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: format!("http://{admin}"),
            session: None,
        }
    }

    async fn read(&self, req: reqwest::RequestBuilder) -> Page {
        let req = match &self.session {
            Some(c) => req.header("cookie", format!("bcci_session={c}")),
            None => req,
        };
        let r = req.send().await.unwrap();
        Page {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        self.read(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        self.read(self.http.post(format!("{}{path}", self.base)).form(fields))
            .await
    }

    /// Signs in with `token` through the sign-in form: the answer.
    pub async fn try_sign_in(&mut self, token: &str, extra: &[(&str, &str)]) -> Page {
        let form = self.get("/console/sign-in").await;
        assert_eq!(form.status, 200, "{}", form.body);
        let cookie = form
            .cookies()
            .into_iter()
            .find(|c| c.starts_with("bcci_sign_in="))
            .expect("the sign-in form sets its CSRF cookie");
        let value = cookie["bcci_sign_in=".len()..].split(';').next().unwrap();
        let mut req = self
            .http
            .post(format!("{}/console/sign-in", self.base))
            .header("cookie", format!("bcci_sign_in={value}"))
            .form(&[("csrf", form.csrf().as_str()), ("token", token)]);
        for (name, value) in extra {
            req = req.header(*name, *value);
        }
        let answer = self.read(req).await;
        if let Some(c) = answer
            .cookies()
            .iter()
            .find(|c| c.starts_with("bcci_session="))
        {
            self.session = Some(
                c["bcci_session=".len()..]
                    .split(';')
                    .next()
                    .unwrap()
                    .to_owned(),
            );
        }
        answer
    }

    pub async fn sign_in(&mut self, token: &str) {
        let answer = self.try_sign_in(token, &[]).await;
        assert_eq!(answer.status, 303, "{}", answer.body);
        assert_eq!(answer.location(), "/console");
    }

    /// Posts a form of `page`'s, with its CSRF token.
    pub async fn act(&self, page: &Page, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = page.csrf();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(path, &all).await
    }
}

#[tokio::test]
async fn strangers_are_sent_to_sign_in_and_only_accounts_sign_in_with_the_form() {
    let gw = gateway().await;
    let mut desk = Desk::new(gw.admin);
    let page = desk.get("/console").await;
    assert_eq!((page.status, page.location()), (303, "/console/sign-in"));
    // The console is on the admin listener only.
    let public = Desk::new(gw.intake);
    assert_eq!(public.get("/console").await.status, 404);
    assert_eq!(public.get("/console/sign-in").await.status, 404);

    let form = desk.get("/console/sign-in").await;
    let csp = form.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(form.headers["x-frame-options"], "DENY");
    assert!(!form.body.contains("<script"), "{}", form.body);
    assert!(form.body.contains("Đăng nhập"), "Vietnamese by default");

    // Without the sign-in form's own cookie: refused as a forged form.
    let forged = desk
        .post(
            "/console/sign-in",
            &[("csrf", &form.csrf()), ("token", VIEWER_TOKEN)],
        )
        .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    // A cookie and a field the attacker chose alike: not the gateway's token.
    let chosen = desk
        .read(
            desk.http
                .post(format!("{}/console/sign-in", desk.base))
                .header("cookie", "bcci_sign_in=abc")
                .form(&[("csrf", "abc"), ("token", VIEWER_TOKEN)]),
        )
        .await;
    assert_eq!(chosen.status, 403, "{}", chosen.body);
    // A script's token has no name: it cannot sign in.
    let script = desk.try_sign_in(ADMIN_TOKEN, &[]).await;
    assert_eq!(script.status, 401, "{}", script.body);
    assert!(desk.session.is_none());

    let signed = desk.try_sign_in(VIEWER_TOKEN, &[]).await;
    assert_eq!(signed.status, 303);
    let cookie = signed
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("bcci_session="))
        .unwrap();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age="] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let home = desk.get("/console").await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(home.body.contains(VIEWER), "{}", home.body);
    assert!(home.body.contains("Hàng đợi callback"), "{}", home.body);
    let english = desk.get("/console?lang=en").await;
    assert!(english.body.contains("Callback queue"), "{}", english.body);
    assert!(
        english
            .cookies()
            .iter()
            .any(|c| c.starts_with("bcci_lang=en")),
        "the choice is remembered"
    );

    // Behind a TLS proxy the session cookie is Secure.
    let mut tls = Desk::new(gw.admin);
    let over_tls = tls
        .try_sign_in(ACCOUNT_TOKEN, &[("x-forwarded-proto", "https")])
        .await;
    assert!(
        over_tls
            .cookies()
            .iter()
            .any(|c| c.starts_with("bcci_session=") && c.contains("; Secure")),
        "{:?}",
        over_tls.cookies()
    );

    // Signing in again ends the browser's earlier session.
    let earlier = desk.session.clone().unwrap();
    desk.sign_in(VIEWER_TOKEN).await;
    assert_ne!(desk.session.as_deref(), Some(earlier.as_str()));
    let mut old = Desk::new(gw.admin);
    old.session = Some(earlier);
    assert_eq!(
        old.get("/console").await.status,
        303,
        "the earlier session is gone"
    );
    let home = desk.get("/console").await;

    // Signing out needs the form's token, then the session is gone.
    let refused = desk.post("/console/sign-out", &[("csrf", "nope")]).await;
    assert_eq!(refused.status, 403);
    let out = desk.act(&home, "/console/sign-out", &[]).await;
    assert_eq!((out.status, out.location()), (303, "/console/sign-in"));
    let after = desk.get("/console").await;
    assert_eq!(after.status, 303, "the old cookie no longer signs in");
}

#[tokio::test]
async fn repeated_failed_sign_ins_are_refused_for_a_while_even_with_the_right_token() {
    let gw = gateway().await;
    let mut desk = Desk::new(gw.admin);
    for _ in 0..5 {
        let wrong = desk.try_sign_in("not-a-token", &[]).await;
        assert_eq!(wrong.status, 401, "{}", wrong.body);
    }
    let limited = desk.try_sign_in(VIEWER_TOKEN, &[]).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    let wait: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&wait), "{wait}");
    assert!(desk.session.is_none());
}

#[tokio::test]
async fn account_tokens_act_under_their_own_name_and_viewers_may_not_act() {
    let gw = gateway().await;
    let id = gw.submit("ROLE-1").await;
    gw.fail(&id).await;
    let call = |token: &str, operator: Option<&str>| {
        let mut req = gw
            .http
            .post(gw.admin_url(&format!("/v1/admin/handoffs/{id}/replay")))
            .bearer_auth(token);
        if let Some(name) = operator {
            req = req.header(
                "x-operator",
                HeaderValue::from_bytes(name.as_bytes()).unwrap(),
            );
        }
        gw.send(req)
    };
    // A viewer reads, but neither acts nor names an operator.
    let (status, _) = gw
        .send(
            gw.http
                .get(gw.admin_url(&format!("/v1/admin/handoffs/{id}")))
                .bearer_auth(VIEWER_TOKEN),
        )
        .await;
    assert_eq!(status, 200);
    let refused = call(VIEWER_TOKEN, None).await;
    assert_eq!(problem(&refused).0, 403, "{:?}", refused.1);
    assert_eq!(problem(&refused).1, "forbidden");
    let named = gw
        .send(
            gw.http
                .get(gw.admin_url("/v1/admin/handoffs"))
                .bearer_auth(VIEWER_TOKEN)
                .header("x-operator", "someone"),
        )
        .await;
    assert_eq!(
        named.0, 403,
        "a viewer may not send X-Operator: {:?}",
        named.1
    );
    let h = gw.store.handoff(None, &id).await.unwrap().unwrap();
    assert_eq!(h.status, Status::Failed, "nothing was done");

    // An operator account's action is recorded under the account's name,
    // whatever X-Operator says.
    let (status, doc) = call(ACCOUNT_TOKEN, Some("somebody else")).await;
    assert_eq!(status, 200, "{doc}");
    let timeline = gw.store.timeline(&id).await.unwrap();
    let by: Vec<_> = timeline.iter().filter_map(|e| e.operator.clone()).collect();
    assert_eq!(by, vec![ACCOUNT.to_owned()], "{timeline:?}");
}

#[tokio::test]
async fn a_viewer_reads_every_page_but_actions_need_an_operator_and_their_csrf_token() {
    let gw = gateway().await;
    let id = gw.submit("CONSOLE-1").await;
    gw.fail(&id).await;
    let path = format!("/console/handoffs/{id}");

    let mut clerk = Desk::new(gw.admin);
    clerk.sign_in(VIEWER_TOKEN).await;
    let page = clerk.get(&path).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("000.00.21.H79-261125-0001"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("data-status=\"failed\""),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("id=\"actions\""),
        "a viewer sees no actions"
    );
    // With the clerk's own CSRF token: refused for the role.
    let refused = clerk.act(&page, &format!("{path}/replay"), &[]).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("viewer"), "{}", refused.body);
    for list in [
        "/console/handoffs?status=failed",
        "/console/callbacks?state=dead",
        "/console/callbacks?state=held",
    ] {
        let answer = clerk.get(list).await;
        assert_eq!(answer.status, 200, "{list}: {}", answer.body);
    }
    let listed = clerk.get("/console/handoffs?status=failed").await;
    assert!(listed.body.contains(&path), "{}", listed.body);

    let mut operator = Desk::new(gw.admin);
    operator.sign_in(ACCOUNT_TOKEN).await;
    let page = operator.get(&path).await;
    assert!(page.body.contains("id=\"actions\""), "{}", page.body);
    let without = operator.post(&format!("{path}/replay"), &[]).await;
    assert_eq!(without.status, 403, "no CSRF token: {}", without.body);
    let wrong = operator
        .post(&format!("{path}/replay"), &[("csrf", "0000")])
        .await;
    assert_eq!(wrong.status, 403, "a wrong CSRF token: {}", wrong.body);
    // The clerk's token is not the operator's either.
    let other = clerk.get(&path).await;
    let crossed = operator.act(&other, &format!("{path}/replay"), &[]).await;
    assert_eq!(crossed.status, 403, "another session's token");
    let h = gw.store.handoff(None, &id).await.unwrap().unwrap();
    assert_eq!(h.status, Status::Failed, "nothing was done yet");

    let done = operator.act(&page, &format!("{path}/replay"), &[]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location(), format!("{path}?done=replayed"));
    let h = gw.store.handoff(None, &id).await.unwrap().unwrap();
    assert_eq!(h.status, Status::Received);
    let timeline = gw.store.timeline(&id).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e.operator.as_deref() == Some(ACCOUNT)),
        "{timeline:?}"
    );
    let shown = operator.get(done.location()).await;
    assert!(shown.body.contains("id=\"done\""), "{}", shown.body);
    assert!(
        shown.body.contains(ACCOUNT),
        "the timeline names the operator"
    );
}

#[tokio::test]
async fn one_box_finds_a_handoff_by_dossier_code_tracking_number_or_phone_kept_out_of_urls() {
    let gw = gateway().await;
    let first = gw.submit("FIND-1").await;
    let mut other = request_body("FIND-2");
    other["dossier_code"] = json!("000.00.21.H79-261125-0002");
    other["citizen"]["phone"] = json!("0987654321");
    let second = gw.submit_as(TOKEN, other).await;
    gw.events(&second, 2, &[(100, gw.now())], gw.now()).await;

    let mut clerk = Desk::new(gw.admin);
    clerk.sign_in(VIEWER_TOKEN).await;
    let home = clerk.get("/console").await;
    let search = async |q: &str| clerk.act(&home, "/console/search", &[("q", q)]).await;
    let by_code = search("000.00.21.H79-261125-0001").await;
    assert_eq!(by_code.location(), format!("/console/handoffs/{first}"));
    let by_tracking = search("EE000000002VN").await;
    assert_eq!(
        by_tracking.location(),
        format!("/console/handoffs/{second}")
    );
    // A phone in any spelling; the answer is a page, not a URL with it.
    let by_phone = search("+84 987 654 321").await;
    assert_eq!(by_phone.location(), format!("/console/handoffs/{second}"));
    // Two dossiers of one citizen: a list of both.
    let mut again = request_body("FIND-3");
    again["dossier_code"] = json!("000.00.21.H79-261125-0003");
    let third = gw.submit_as(TOKEN, again).await;
    let both = search("0912.345.678").await;
    assert_eq!(both.status, 200, "{}", both.body);
    assert!(both.body.contains(first.as_str()), "{}", both.body);
    assert!(both.body.contains(third.as_str()), "{}", both.body);
    assert!(!both.body.contains(second.as_str()), "{}", both.body);
    // The agency's phone is not a citizen's.
    let agency = search("02543830123").await;
    assert!(agency.body.contains("id=\"empty\""), "{}", agency.body);
    let by_id = search(first.as_str()).await;
    assert_eq!(by_id.location(), format!("/console/handoffs/{first}"));
    // Searching is a form post only: no query string can carry a phone.
    let get = clerk.get("/console/search?q=0987654321").await;
    assert_eq!(get.status, 405);
}

#[tokio::test]
async fn operators_replay_dead_callbacks_see_them_delivered_and_erase_only_with_the_dossier_code() {
    let gw = gateway().await;
    gw.receiver.set_status(StatusCode::INTERNAL_SERVER_ERROR);
    let id = gw.submit("CALLBACK-1").await;
    gw.fail(&id).await;
    gw.let_callbacks_die().await;
    let mut operator = Desk::new(gw.admin);
    operator.sign_in(ACCOUNT_TOKEN).await;
    let dead = operator.get("/console/callbacks?state=dead").await;
    assert_eq!(dead.status, 200);
    assert!(dead.body.contains(id.as_str()), "{}", dead.body);
    assert!(dead.body.contains("data-state=\"dead\""), "{}", dead.body);
    let callback = gw.store.handoff_callbacks(&id).await.unwrap().remove(0);

    gw.receiver.set_status(StatusCode::OK);
    let replayed = operator
        .act(
            &dead,
            &format!("/console/callbacks/{}/replay", callback.id),
            &[],
        )
        .await;
    assert_eq!(replayed.status, 303, "{}", replayed.body);
    assert_eq!(
        replayed.location(),
        format!("/console/handoffs/{id}?done=callback")
    );
    gw.relay.run_until_idle().await.unwrap();
    let page = operator.get(&format!("/console/handoffs/{id}")).await;
    assert!(
        page.body.contains("data-state=\"delivered\""),
        "{}",
        page.body
    );
    assert!(
        gw.receiver
            .accepted()
            .iter()
            .any(|r| r.webhook_id == callback.id),
        "delivered with its own webhook-id"
    );

    // The citizen's details are on the page for a signed-in account.
    assert!(page.body.contains("Nguyễn Văn An"), "{}", page.body);
    assert!(page.body.contains("0912345678"), "{}", page.body);
    // Erasing wants the dossier code typed again.
    let path = format!("/console/handoffs/{id}/erase");
    let acts = async || {
        let timeline = gw.store.timeline(&id).await.unwrap();
        timeline
            .iter()
            .filter(|e| e.operator.as_deref() == Some(ACCOUNT))
            .count()
    };
    let before = acts().await;
    assert_eq!(before, 1, "the callback's replay");
    let mistyped = operator
        .act(&page, &path, &[("confirm", "000.00.21")])
        .await;
    assert_eq!(mistyped.status, 422, "{}", mistyped.body);
    assert_eq!(acts().await, before, "nothing erased");
    let erased = operator
        .act(&page, &path, &[("confirm", "000.00.21.H79-261125-0001")])
        .await;
    assert_eq!(erased.status, 303, "{}", erased.body);
    assert_eq!(
        erased.location(),
        format!("/console/handoffs/{id}?done=erased")
    );
    assert_eq!(
        acts().await,
        before + 1,
        "the erasure, under the account's name"
    );
    let after = operator.get(&format!("/console/handoffs/{id}")).await;
    assert!(after.body.contains("id=\"erased\""), "{}", after.body);
    assert!(!after.body.contains("Nguyễn Văn An"), "{}", after.body);
}

#[tokio::test]
async fn a_test_callback_is_signed_sent_now_and_its_answer_shown() {
    let gw = gateway().await;
    let mut operator = Desk::new(gw.admin);
    operator.sign_in(ACCOUNT_TOKEN).await;
    let form = operator.get("/console/test-callback").await;
    assert_eq!(form.status, 200, "{}", form.body);
    let sent = operator
        .act(&form, "/console/test-callback", &[("client", CONDAO)])
        .await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    assert!(
        sent.body.contains("id=\"answer-status\">HTTP 2"),
        "{}",
        sent.body
    );
    let got = gw.receiver.received();
    let last = got.last().expect("the receiver got the test callback");
    assert!(last.webhook_id.starts_with("msg_test_"), "{last:?}");
    assert_eq!(last.body["type"], "gateway.test");
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM callbacks")
        .fetch_one(&gw.db().await)
        .await
        .unwrap();
    assert_eq!(stored, 0, "a test callback is not queued");

    let mut clerk = Desk::new(gw.admin);
    clerk.sign_in(VIEWER_TOKEN).await;
    assert_eq!(clerk.get("/console/test-callback").await.status, 403);
    let refused = clerk
        .act(&form, "/console/test-callback", &[("client", CONDAO)])
        .await;
    assert_eq!(refused.status, 403);
}

#[tokio::test]
async fn an_operator_resolves_a_partially_delivered_handoff_with_a_note() {
    let gw = gateway().await;
    let id = gw.submit("PARTIAL-1").await;
    gw.events(&id, 3, &[(20, gw.now())], gw.now()).await;
    let h = gw.store.handoff(None, &id).await.unwrap().unwrap();
    assert_eq!(h.status, Status::PartiallyDelivered);

    let mut operator = Desk::new(gw.admin);
    operator.sign_in(ACCOUNT_TOKEN).await;
    let listed = operator
        .get("/console/handoffs?status=partially_delivered")
        .await;
    assert!(listed.body.contains(id.as_str()), "{}", listed.body);
    let path = format!("/console/handoffs/{id}");
    let page = operator.get(&path).await;
    assert!(page.body.contains("id=\"resolve\""), "{}", page.body);
    let bad = operator
        .act(&page, &format!("{path}/resolve"), &[("status", "lost")])
        .await;
    assert_eq!(bad.status, 422, "{}", bad.body);
    let done = operator
        .act(
            &page,
            &format!("{path}/resolve"),
            &[
                ("status", "returned"),
                ("note", "Công dân nhận bản chính tại bộ phận một cửa"),
            ],
        )
        .await;
    assert_eq!(
        done.location(),
        format!("{path}?done=resolved"),
        "{}",
        done.body
    );
    let h = gw.store.handoff(None, &id).await.unwrap().unwrap();
    assert_eq!(h.status, Status::Returned);
    let shown = operator.get(done.location()).await;
    assert!(
        shown
            .body
            .contains("Công dân nhận bản chính tại bộ phận một cửa"),
        "the note is on the timeline: {}",
        shown.body
    );
}

#[tokio::test]
async fn what_vietnam_post_and_operators_write_is_shown_as_text_never_as_markup() {
    let gw = gateway().await;
    let id = gw.submit("ESCAPE-1").await;
    let hostile = "<script>alert(1)</script>\"><img src=x onerror=alert(2)>";
    let mut report = carrier_event(&id, 4, 12, gw.now());
    report.carrier.text = Some(hostile.to_owned());
    report.carrier.location = Some(hostile.to_owned());
    gw.store
        .apply_carrier_events(vec![report], &context(), gw.now())
        .await
        .unwrap();
    let mut clerk = Desk::new(gw.admin);
    clerk.sign_in(VIEWER_TOKEN).await;
    let page = clerk.get(&format!("/console/handoffs/{id}")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script"), "{}", page.body);
    assert!(!page.body.contains("<img"), "{}", page.body);
}

#[tokio::test]
async fn console_actions_are_refused_while_the_gateway_drains_and_pages_still_read() {
    let gw = gateway().await;
    let id = gw.submit("DRAIN-1").await;
    gw.fail(&id).await;
    let mut operator = Desk::new(gw.admin);
    operator.sign_in(ACCOUNT_TOKEN).await;
    let path = format!("/console/handoffs/{id}");
    let page = operator.get(&path).await;
    gw.lifecycle.drain();
    let refused = operator.act(&page, &format!("{path}/replay"), &[]).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    let h = gw.store.handoff(None, &id).await.unwrap().unwrap();
    assert_eq!(h.status, Status::Failed, "nothing was done");
    assert_eq!(operator.get(&path).await.status, 200, "reading goes on");
}
