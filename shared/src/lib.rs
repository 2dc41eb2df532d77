//! STEDI lakehouse core: everything the zone-transition Lambdas do, testable without a
//! network. The tables and transitions are declared once, in [`streams`]; the functions in
//! `functions/` only wire `lambda::serve` to a [`Transition`].

#[cfg(feature = "aws")]
pub mod catalog;
pub mod columnar;
pub mod compute;
pub mod config;
pub mod error;
pub mod event;
#[cfg(feature = "aws")]
pub mod index;
pub mod keys;
#[cfg(feature = "aws")]
pub mod lambda;
pub mod lines;
#[cfg(feature = "aws")]
pub mod reconcile;
pub mod record;
pub mod rules;
pub mod schema;
#[cfg(feature = "aws")]
pub mod store;
pub mod streams;
pub mod summary;
#[cfg(all(test, feature = "aws"))]
pub(crate) mod testing;
#[cfg(feature = "aws")]
pub mod transitions;

pub use error::{Error, Result};
pub use streams::Transition;
#[cfg(feature = "aws")]
pub use transitions::Ctx;
