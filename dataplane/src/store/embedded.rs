//! Embedded store on redb (crash-safe, copy-on-write B-trees): `prapi local` and tests.
