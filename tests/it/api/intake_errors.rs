//! Every fault of the contract's error table, in both formats, and nothing
//! stored after any of them.

use serde_json::{Value, json};

use crate::helpers::*;

fn content_type_of(name: &str) -> &'static str {
    if name.ends_with(".xml") {
        "application/xml"
    } else {
        "application/json"
    }
}

#[tokio::test]
async fn every_invalid_fixture_gets_its_status_slug_and_fields_and_nothing_is_stored() {
    let app = spawn_app().await;
    let expected: Value = serde_json::from_slice(&fixture("invalid/expected.json")).unwrap();
    let expected = expected.as_object().unwrap();
    assert!(expected.len() >= 40, "the fixture set shrank");
    for (name, want) in expected {
        let body = fixture(&format!("invalid/{name}"));
        let r = app
            .post_handoff(body, content_type_of(name), Some(TOKEN))
            .await;
        let status = r.status().as_u16();
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        let text = r.text().await.unwrap();
        assert_eq!(
            status,
            want["status"].as_u64().unwrap() as u16,
            "{name}: {text}"
        );
        if name.ends_with(".xml") {
            assert!(ct.starts_with("application/problem+xml"), "{name}: {ct}");
        } else {
            assert!(ct.starts_with("application/problem+json"), "{name}: {ct}");
        }
        let (slug, fields) = problem_of(&ct, &text);
        assert_eq!(slug, want["slug"].as_str().unwrap(), "{name}");
        let want_fields: Vec<String> = want["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(fields, want_fields, "{name}: {text}");
    }
    assert_eq!(app.handoff_count().await, 0, "an error stored something");
    assert_eq!(app.store.count_pending_postal_jobs().await.unwrap(), 0);
}

#[tokio::test]
async fn every_valid_fixture_is_accepted_in_its_format() {
    let app = spawn_app().await;
    let mut accepted = 0;
    let mut stems = std::collections::HashMap::<String, String>::new();
    for entry in std::fs::read_dir(fixtures_dir().join("valid")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let r = app
            .post_handoff(
                std::fs::read(&path).unwrap(),
                content_type_of(&name),
                Some(TOKEN),
            )
            .await;
        let status = r.status().as_u16();
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        let body = r.text().await.unwrap();
        // A JSON and an XML twin carry the same request: one 202, one 200.
        assert!(status == 202 || status == 200, "{name}: {status} {body}");
        if name.ends_with(".xml") {
            assert!(ct.starts_with("application/xml"), "{name}: {ct}");
            assert!(body.contains("<handoff><id>h_"), "{name}: {body}");
        } else {
            assert!(ct.starts_with("application/json"), "{name}: {ct}");
        }
        let stem = name.rsplit_once('.').unwrap().0.to_owned();
        if status == 202 {
            accepted += 1;
            assert!(
                stems.insert(stem, name.clone()).is_none(),
                "{name} twin got 202 twice"
            );
        } else {
            assert!(
                stems.contains_key(&stem),
                "{name}: 200 without an earlier twin"
            );
        }
    }
    assert_eq!(app.handoff_count().await, accepted);
    assert_eq!(
        app.store.count_pending_postal_jobs().await.unwrap(),
        accepted,
        "every accepted handoff has its postal job"
    );
}

#[tokio::test]
async fn missing_and_unknown_tokens_get_401_in_the_request_format() {
    let app = spawn_app().await;
    let body = fixture("valid/return-cod.json");
    for token in [None, Some("not-a-token")] {
        let r = app
            .post_handoff(body.clone(), "application/json", token)
            .await;
        assert_eq!(r.status(), 401);
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        let (slug, _) = problem_of(&ct, &r.text().await.unwrap());
        assert_eq!(slug, "unauthorized");
    }
    let r = app
        .post_handoff(fixture("valid/return-cod.xml"), "application/xml", None)
        .await;
    assert_eq!(r.status(), 401);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/problem+xml"));
    assert_eq!(app.handoff_count().await, 0);
}

#[tokio::test]
async fn problem_documents_carry_every_member_and_the_request_id_as_instance() {
    let app = spawn_app().await;
    let r = app.post_json(&json!({"request_id": "x"})).await;
    assert_eq!(r.status(), 422);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(request_id.starts_with("req_"));
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["type"], "urn:bcci:problem:invalid");
    assert_eq!(doc["status"], 422);
    assert_eq!(doc["instance"], request_id.as_str());
    assert!(doc["title"].is_string() && doc["detail"].is_string());
    for e in doc["errors"].as_array().unwrap() {
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

#[tokio::test]
async fn faults_are_answered_in_the_contract_order() {
    let app = spawn_app_with("").await;
    let huge = vec![b'{'; 70_000];
    // Unauthorized beats unsupported media type and size.
    let r = app.post_handoff(huge.clone(), "text/plain", None).await;
    assert_eq!(r.status(), 401);
    // Unsupported media type beats size.
    let r = app
        .post_handoff(huge.clone(), "text/plain", Some(TOKEN))
        .await;
    assert_eq!(r.status(), 415);
    // Size beats malformed.
    let r = app
        .post_handoff(huge, "application/json", Some(TOKEN))
        .await;
    assert_eq!(r.status(), 413);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(problem_of(&ct, &r.text().await.unwrap()).0, "too-large");
    // Malformed beats invalid.
    let r = app
        .post_handoff("{\"request_id\": 1,", "application/json", Some(TOKEN))
        .await;
    assert_eq!(r.status(), 400);
    // Invalid beats conflict: a reused request_id with a bad body is 422.
    let ok = app.post_json(&valid_request("ORDER-1")).await;
    assert_eq!(ok.status(), 202);
    let mut bad = valid_request("ORDER-1");
    bad["parcel"]["weight_grams"] = json!(0);
    assert_eq!(app.post_json(&bad).await.status(), 422);
    // Draining beats everything, with Retry-After.
    app.lifecycle.drain();
    let r = app.post_handoff("", "text/plain", None).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(app.handoff_count().await, 1);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413_and_stores_nothing() {
    let app = spawn_app().await;
    // No Content-Length: the limit must hold while streaming.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..20).map(|_| Ok(vec![b' '; 8_192])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let r = app
        .post_handoff(body, "application/json", Some(TOKEN))
        .await;
    assert_eq!(r.status(), 413);
    assert_eq!(app.handoff_count().await, 0);
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_with_retry_after() {
    let app = TestApp::builder()
        .configure(|mut c| {
            c.clients[0].requests_per_second = Some(2);
            c
        })
        .spawn()
        .await;
    let url = app.url("/v1/handoffs/h_01JDQ4M5X2K7A9B3C6D8E0F1G2");
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
        if r.status() == 429 {
            let wait: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(wait >= 1);
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses[..2], [404, 404]);
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    // The other client has its own allowance.
    let r = http
        .get(&url)
        .bearer_auth(OTHER_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    app.stop().await;
}

/// Found by fuzzing: a problem+xml echoing a control character (there, a
/// broken tag name in the reader's error; here, an unknown JSON field's
/// name) was not well-formed XML.
#[tokio::test]
async fn a_problem_echoing_a_control_character_is_still_well_formed_xml() {
    let app = spawn_app().await;
    let r = app
        .http
        .post(app.url("/v1/handoffs"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .header("accept", "application/xml")
        .body(r#"{"bad\u0001name": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    let text = r.text().await.unwrap();
    assert!(
        text.chars().all(bcci_gateway::domain::xml::is_xml_char),
        "{text:?}"
    );
    let (slug, fields) = problem_of(&ct, &text);
    assert_eq!(slug, "invalid");
    assert!(fields.contains(&"bad\u{FFFD}name".to_owned()), "{fields:?}");
    assert_eq!(app.handoff_count().await, 0);
}
