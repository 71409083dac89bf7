//! The Kubeflow spark-operator front end of [`crate::submission`]:
//! `ferry apply` reads SparkApplication objects ([`app`]), plans each one
//! with the planner `ferry submit` uses ([`plan`]) after its Maven
//! packages are resolved as `ferry submit` resolves them ([`packages`]), and renders the object
//! with its dependencies rewritten and ferry-init added, plus the token
//! Secret ([`render`]). Applying them is `crate::command::apply`'s.

pub mod app;
pub mod packages;
pub mod plan;
pub mod render;

pub use app::{SparkApplication, parse_documents};
pub use plan::{AppPlan, ApplyOptions, Inject};
pub use render::{RenderedApp, owned_by, render};
