//! STEDI lakehouse core: everything the zone-transition Lambdas do, testable without a
//! network. The functions in `functions/` only wire [`lambda::serve`] to a [`Transition`].

pub mod catalog;
pub mod columnar;
pub mod config;
pub mod error;
pub mod event;
pub mod keys;
pub mod lambda;
pub mod lines;
pub mod reconcile;
pub mod record;
pub mod rules;
pub mod schema;
pub mod store;
pub mod summary;
pub mod transitions;

pub use error::{Error, Result};
pub use transitions::{Ctx, Transition};
