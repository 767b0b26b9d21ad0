//! Same request again: 200 with the same handoff; different request: 409.

use serde_json::{Value, json};

use crate::helpers::*;

#[tokio::test]
async fn twenty_identical_requests_at_once_create_exactly_one_handoff() {
    let app = spawn_app().await;
    let body = valid_request("CONCURRENT-1").to_string();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let http = app.http.clone();
        let url = app.url("/v1/handoffs");
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(TOKEN)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let doc: Value = r.json().await.unwrap();
            (status, doc["id"].as_str().unwrap().to_owned())
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let created = results.iter().filter(|(s, _)| *s == 202).count();
    let repeated = results.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!((created, repeated), (1, 19), "{results:?}");
    let ids: std::collections::HashSet<_> = results.iter().map(|(_, id)| id).collect();
    assert_eq!(ids.len(), 1, "every answer names the same handoff");
    assert_eq!(app.handoff_count().await, 1);
    assert_eq!(app.store.count_pending_postal_jobs().await.unwrap(), 1);
}

#[tokio::test]
async fn the_same_request_as_json_then_xml_is_the_same_handoff() {
    let app = spawn_app().await;
    let r = app
        .post_handoff(
            fixture("valid/return-cod.json"),
            "application/json",
            Some(TOKEN),
        )
        .await;
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = r.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/handoffs/{}", created["id"].as_str().unwrap())
    );

    let r = app
        .post_handoff(
            fixture("valid/return-cod.xml"),
            "application/xml",
            Some(TOKEN),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/xml")
    );
    let xml = r.text().await.unwrap();
    let (_, tree) = bcci_gateway::http::xml::read_tree(xml.as_bytes()).unwrap();
    assert_eq!(tree["id"], created["id"]);

    // XML asked to answer in JSON.
    let r = app
        .http
        .post(app.url("/v1/handoffs"))
        .bearer_auth(TOKEN)
        .header("content-type", "text/xml; charset=utf-8")
        .header("accept", "application/json")
        .body(fixture("valid/return-cod.xml"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["id"], created["id"]);
    assert_eq!(app.handoff_count().await, 1);
}

#[tokio::test]
async fn key_order_whitespace_nfc_phone_form_and_null_do_not_make_a_different_request() {
    let app = spawn_app().await;
    let original = valid_request("SAME-1");
    assert_eq!(app.post_json(&original).await.status(), 202);

    let mut variant = original.clone();
    variant["citizen"]["name"] = json!("Nguye\u{0302}\u{0303}n Va\u{0306}n An");
    variant["citizen"]["phone"] = json!("+84 912 345 678");
    variant["citizen"]["address"]["line"] = json!("  12 Nguyễn Huệ, khu 3 ");
    if original["citizen"]["name"] != json!("Nguyễn Văn An") {
        variant["citizen"]["name"] = original["citizen"]["name"].clone();
    }
    let reordered: serde_json::Map<String, Value> = variant
        .as_object()
        .unwrap()
        .iter()
        .rev()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let pretty = serde_json::to_string_pretty(&Value::Object(reordered)).unwrap();
    let r = app
        .post_handoff(pretty, "application/json", Some(TOKEN))
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(app.handoff_count().await, 1);
}

#[tokio::test]
async fn a_reused_request_id_with_a_different_request_is_a_conflict() {
    let app = spawn_app().await;
    assert_eq!(
        app.post_json(&valid_request("REUSED-1")).await.status(),
        202
    );
    let mut other = valid_request("REUSED-1");
    other["parcel"]["weight_grams"] = json!(301);
    let r = app.post_json(&other).await;
    assert_eq!(r.status(), 409);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(problem_of(&ct, &r.text().await.unwrap()).0, "conflict");
    assert_eq!(app.handoff_count().await, 1);
}

#[tokio::test]
async fn request_ids_are_scoped_per_client_and_rotated_tokens_are_the_same_client() {
    let app = spawn_app().await;
    let body = valid_request("SHARED-ID").to_string();
    let r = app
        .post_handoff(body.clone(), "application/json", Some(TOKEN))
        .await;
    assert_eq!(r.status(), 202);
    // The rotated token belongs to the same client: same request, 200.
    let r = app
        .post_handoff(body.clone(), "application/json", Some(TOKEN_ROTATED))
        .await;
    assert_eq!(r.status(), 200);
    // Another client may use the same request_id for its own handoff.
    let r = app
        .post_handoff(body, "application/json", Some(OTHER_TOKEN))
        .await;
    assert_eq!(r.status(), 202);
    assert_eq!(app.handoff_count().await, 2);
}
