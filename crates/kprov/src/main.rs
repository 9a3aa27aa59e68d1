//! The `kprov` command: parses arguments and dispatches to the libraries.
//!
//! Nothing here decides what a node needs; see ARCHITECTURE.md for where
//! each capability lives.

mod cli;
mod commands;
mod config_file;
mod log_filter;
mod output;

use std::process::ExitCode;

fn main() -> ExitCode {
    // The stage2 initrd's /init (`kprov initrd build`): the kernel starts
    // it as PID 1 named /init, with its settings on the kernel command
    // line. Both are checked: kprov as PID 1 in a container is a command.
    if std::process::id() == 1 && std::env::args_os().next().is_some_and(|a| a == "/init") {
        kprov_stage2::init::run();
    }
    let cli = match config_file::parse() {
        Ok(cli) => cli,
        Err(err) => {
            eprintln!("kprov: error: {}", describe(&err));
            return ExitCode::FAILURE;
        }
    };
    // A server's log is its record of what it did: info by default.
    let default_level = match cli.command {
        cli::Command::Netboot(_) => "info",
        cli::Command::Lb(cli::LbCommand::Run(_)) => "info",
        _ => "warn",
    };
    // A bad KPROV_LOG is a usage error like a bad --log-level.
    let from_env = match std::env::var("KPROV_LOG") {
        Ok(value) => match value.parse::<log_filter::LogFilter>() {
            Ok(filter) => Some(filter),
            Err(e) => {
                eprintln!("kprov: error: KPROV_LOG {e}");
                return ExitCode::from(2);
            }
        },
        Err(_) => None,
    };
    init_logging(from_env.as_ref().or(cli.log_level.as_ref()), default_level);
    let result = match cli.command {
        cli::Command::Provision(args) => commands::provision::run(*args),
        cli::Command::Reset(args) => commands::reset::run(args),
        cli::Command::HealthCheck(args) => commands::health_check::run(args),
        cli::Command::PodNetwork(args) => match args.command {
            cli::PodNetworkCommand::Sync(args) => commands::pod_network::sync(args),
        },
        cli::Command::Os(args) => commands::os::run(args),
        cli::Command::Etcd(cli::EtcdCommand::Members(args)) => commands::etcd::members(&args),
        cli::Command::Pki(args) => commands::pki::run(*args),
        cli::Command::Kubeconfig(args) => commands::kubeconfig::run(*args),
        cli::Command::Userdata(args) => commands::userdata::run(*args),
        cli::Command::Bundle(command) => commands::bundle::run(command),
        cli::Command::Init(args) => commands::init::run(*args),
        cli::Command::Token(command) => commands::token::run(command),
        cli::Command::Netboot(command) => commands::netboot::run(command),
        cli::Command::Cluster(command) => commands::cluster::run(command),
        cli::Command::Lb(command) => commands::lb::run(command),
        cli::Command::Stage2(args) => commands::stage2::run(&args),
        cli::Command::Image(command) => commands::image::run(command),
        cli::Command::Initrd(command) => commands::image::run_initrd(command),
        cli::Command::Version(args) => commands::version::run(&args),
        cli::Command::Completions(args) => commands::completions::run(&args),
        cli::Command::Man(args) => commands::man::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("kprov: error: {}", describe(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line. Library errors already include
/// their cause's text, so a cause is added only when it says something new.
fn describe(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

/// Logs go to stderr; stdout is for data. `filter` is KPROV_LOG's or
/// --log-level's, checked already.
fn init_logging(filter: Option<&log_filter::LogFilter>, default_level: &str) {
    // Unless asked for a level, kube's client stays quiet: it logs every
    // failed request at error level, while kprov reports failures itself,
    // with context (a wait for the API server would print one per second).
    let directives = filter.map_or_else(
        || format!("{default_level},kube_client=off"),
        |f| f.as_str().to_string(),
    );
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: logs in files stay greppable.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}
