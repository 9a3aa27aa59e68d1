//! One module per subcommand: turn parsed flags into library calls and
//! format the results.

pub mod bundle;
pub mod health_check;
pub mod kubeconfig;
pub mod os;
pub mod pki;
pub mod provision;
pub mod userdata;
