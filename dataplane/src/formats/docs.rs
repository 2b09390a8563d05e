//! Keeps `docs/formats.md` honest: every worked example in it is rendered and compared.
//!
//! An input is marked `<!-- example input: NAME -->` and is followed by a JSON block
//! `{"product": <stored product>, "offers": <standard offers body>}`; an output is marked
//! `<!-- example output: NAME MEDIA-TYPE -->` and followed by the JSON block the code must render.

use std::collections::HashMap;

use serde_json::Value;

use super::testdata::assert_json_eq;
use super::{MediaType, render_product_offers};
use crate::model::{Country, Offer, ProductId};

const DOC: &str = include_str!("../../../docs/formats.md");

/// The JSON block after each marker with the given prefix: (marker text, block).
fn blocks(prefix: &str) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    let mut rest = DOC;
    while let Some(at) = rest.find(prefix) {
        let after = &rest[at + prefix.len()..];
        let end = after.find("-->").expect("marker is closed");
        let marker = after[..end].trim();
        let body = &after[end..];
        let open = body
            .find("```json\n")
            .expect("a json block follows the marker")
            + 8;
        let close = body[open..].find("```").expect("the block is closed") + open;
        out.push((marker, &body[open..close]));
        rest = &body[close..];
    }
    out
}

struct Input {
    product: Vec<u8>,
    offers: Vec<Offer>,
}

fn input(block: &str) -> Input {
    let v: Value = serde_json::from_str(block).expect("input is JSON");
    let product = serde_json::to_vec(&v["product"]).expect("product serializes");
    let id = ProductId::parse(v["offers"]["product_id"].as_str().expect("product_id"))
        .expect("valid product id");
    let country =
        Country::parse(v["offers"]["country"].as_str().expect("country")).expect("valid country");
    let offers = v["offers"]["offers"]
        .as_array()
        .expect("offers")
        .iter()
        .map(|o| {
            let bytes = serde_json::to_vec(o).expect("offer serializes");
            Offer::decode_body(&id, country, &bytes).expect("a standard offer body")
        })
        .collect();
    Input { product, offers }
}

#[test]
fn examples_in_docs_formats_md_are_what_the_code_renders() {
    let inputs: HashMap<&str, Input> = blocks("<!-- example input:")
        .into_iter()
        .map(|(name, block)| (name, input(block)))
        .collect();
    assert_eq!(inputs.len(), 2, "inputs P1 and P5");
    let outputs = blocks("<!-- example output:");
    for (marker, expected) in &outputs {
        let (name, media) = marker.split_once(' ').expect("NAME MEDIA-TYPE");
        let media = MediaType::ALL
            .into_iter()
            .find(|m| m.content_type() == media)
            .unwrap_or_else(|| panic!("unknown media type in {marker:?}"));
        let input = inputs
            .get(name)
            .unwrap_or_else(|| panic!("no input {name:?}"));
        let rendered = render_product_offers(media, &input.product, &input.offers)
            .unwrap_or_else(|e| panic!("{marker}: {e}"));
        assert_json_eq(&rendered, expected);
    }
    // Every media type is shown for P1; the edge-case example shows the three legacy ones.
    let shown: Vec<&str> = outputs.iter().map(|(m, _)| *m).collect();
    for media in MediaType::ALL {
        assert!(shown.contains(&format!("P1 {}", media.content_type()).as_str()));
    }
    assert_eq!(outputs.len(), 7, "{shown:?}");
}
