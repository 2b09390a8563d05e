//! Countries through the real ingress: every letter case of `X-Country` reaches the group that
//! serves the country; what matches no route is the ingress's own answer.

use std::io::Write as _;

use crate::support::*;

/// docs/examples/one-group.yaml: `X-Country` in any letter case reaches the group serving the
/// country (docs/api.md: case-insensitive); a country no group serves, and a request without
/// the header, match no route: the ingress answers `404` itself (docs/api.md, "Through the
/// ingress"), and no prapi pod sees them.
#[tokio::test]
async fn countries_reach_their_group_in_any_letter_case() {
    let Some(kind) = Kind::get().await else {
        return;
    };
    let ns = test_namespace(&kind, "e2e-countries").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let catalogue = generate_catalogue(dir.path(), 10, "de,at,ch");
    let topics = Topics::create(kind.var("KAFKA_BOOTSTRAP_SERVERS"), 4).await;
    produce(&topics, &catalogue, catalogue.product_ids.len()).await;
    let group = example(&kind, "one-group.yaml", &topics).remove(0);
    let name = apply_group(&kind.client, &ns, &group).await;
    wait_ready(&kind.client, &ns, &name).await;
    wait_table_holds(
        &kind,
        &format!("prapi-{ns}-{name}"),
        &catalogue,
        &["de", "at", "ch"],
    )
    .await;
    let path = format!("/product-offers/{}", catalogue.product_ids[0]);
    // Every Skipper replica has the group's routes and endpoints (each loads them on its own)
    // and the product is in the pod's cache: 20 answers in a row for each country.
    for country in ["de", "at", "ch"] {
        wait_ingress_converged(&kind, &path, &[("x-country", country)], |a| a.status == 200).await;
    }
    let url = format!("{}{path}", kind.ingress());

    let prefix = format!("{name}-products-");
    let mut answered = Vec::new();
    for country in ["de", "DE", "De", "at", "AT", "aT", "ch", "CH", "Ch"] {
        for _ in 0..20 {
            let r = kind
                .http
                .get(&url)
                .header("x-country", country)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{country}: {e}"));
            let pod = r
                .headers()
                .get(SERVED_BY)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            assert_eq!(r.status(), 200, "X-Country: {country}");
            assert!(
                pod.starts_with(&prefix),
                "X-Country: {country} answered by {pod:?}"
            );
        }
        answered.push(country);
    }
    for (what, header) in [("an unserved country", Some("fr")), ("no X-Country", None)] {
        let mut req = kind.http.get(&url);
        if let Some(c) = header {
            req = req.header("x-country", c);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.status(), 404, "{what}");
        assert!(
            r.headers().get(SERVED_BY).is_none(),
            "{what} reached a prapi pod"
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "countries: 20 requests each for {answered:?} reached {name}; fr and no header: 404 from the ingress"
    );
}
