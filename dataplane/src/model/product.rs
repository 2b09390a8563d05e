//! The fields of a product document that the formats read. The document itself stays opaque JSON
//! (clients own its schema, docs/events.md keeps unknown fields as-is); this is a lenient view.

use serde::Deserialize;

/// A read-only view of a stored product document: missing fields read as empty.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ProductDoc {
    /// Product id (set from the event).
    pub id: String,
    /// Version of the product write (set from the event).
    pub version: u64,
    /// Display name.
    pub name: String,
    /// Brand code and name.
    pub brand: Brand,
    /// Sellable sizes, in product order.
    pub simples: Vec<Simple>,
    /// Images, first is the main one.
    pub media: Vec<Media>,
    /// Attributes with one or more values each.
    pub attributes: Vec<Attribute>,
}

/// Brand of a product.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Brand {
    /// Short brand code, e.g. `NI1`.
    pub code: String,
    /// Display name, e.g. `Nike`.
    pub name: String,
}

/// A simple: one sellable SKU of a product (usually one size).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Simple {
    /// The SKU offers refer to.
    pub sku: String,
    /// Size label.
    pub size: String,
}

/// A media item.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Media {
    /// Absolute URL of the image.
    pub url: String,
}

/// A product attribute.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Attribute {
    /// Attribute name.
    pub key: String,
    /// Its values.
    pub values: Vec<String>,
}

impl ProductDoc {
    /// Parses a stored product body.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
