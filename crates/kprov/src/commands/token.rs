//! `kprov token create|list|delete`: bootstrap tokens through the API
//! server. The token goes only to stdout or a 0600 file, never to logs.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use kprov_controlplane::copy_certs::{self, CertificateKey, CopyCertsError};
use kprov_controlplane::token::{self, TokenSpec};
use kprov_host::fs::{write_atomic, FileAttrs};
use kprov_host::Root;
use kprov_kube as api;
use kprov_pki::kubeconfig::Kubeconfig;

use crate::cli::{OutputArg, TokenCommand, TokenCreateArgs, TokenDeleteArgs, TokenListArgs};
use crate::commands::runtime;

/// Runs `kprov token`.
pub fn run(command: TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Create(args) => create(args),
        TokenCommand::List(args) => list(args),
        TokenCommand::Delete(args) => delete(args),
    }
}

async fn client(kubeconfig: &Path) -> anyhow::Result<api::Client> {
    api::client(kubeconfig)
        .await
        .with_context(|| format!("--kubeconfig {}", kubeconfig.display()))
}

/// The API server URL and CA hash a node joins with, from an admin
/// kubeconfig.
pub fn join_target(kubeconfig: &Path) -> anyhow::Result<(String, String)> {
    let text = std::fs::read(kubeconfig)
        .with_context(|| format!("--kubeconfig {}: cannot read", kubeconfig.display()))?;
    let creds = Kubeconfig::from_yaml(&text)
        .and_then(|k| k.current_credentials())
        .with_context(|| format!("--kubeconfig {}", kubeconfig.display()))?;
    let hash = kprov_pki::ca_cert_hash(&creds.ca_pem)
        .with_context(|| format!("--kubeconfig {}: the CA", kubeconfig.display()))?;
    Ok((creds.server, hash))
}

fn create(args: TokenCreateArgs) -> anyhow::Result<ExitCode> {
    let spec = TokenSpec {
        token: token::generate(),
        description: args.description.clone(),
        ttl: args.ttl,
        usages: args.usages.clone(),
        groups: args.groups.clone(),
    };
    let certificate_key = match (args.control_plane, args.certificate_key.as_deref()) {
        (true, Some(key)) => Some(key.parse::<CertificateKey>()?),
        _ => None,
    };
    let text = match (args.print_join_command, &certificate_key) {
        (true, Some(key)) => {
            let (server, hash) = join_target(&args.admin.kubeconfig)?;
            token::control_plane_join_command_line(&server, &spec.token, &hash, key)
        }
        (true, None) => {
            let (server, hash) = join_target(&args.admin.kubeconfig)?;
            token::join_command_line(&server, &spec.token, &hash)
        }
        (false, _) => spec.token.expose_secret(),
    };
    runtime()?.block_on(async {
        let client = client(&args.admin.kubeconfig).await?;
        if let Some(key) = &certificate_key {
            // A master's join line is only worth printing if the upload
            // is there and opens with its key: check before making the
            // token, so that a bad key leaves nothing behind.
            let secret = api::get_secret(&client, copy_certs::NAMESPACE, copy_certs::SECRET_NAME)
                .await
                .context("reading the uploaded certificates")?
                .ok_or(CopyCertsError::NotFound)?;
            copy_certs::decrypt_secret(&secret, key)?;
        }
        api::create_token(&client, &spec, time::OffsetDateTime::now_utc())
            .await
            .context("creating the bootstrap token")
    })?;
    eprintln!(
        "kprov: created bootstrap token {} (valid {}, usages {})",
        spec.token.id(),
        args.ttl,
        spec.usages
            .iter()
            .map(|u| u.name())
            .collect::<Vec<_>>()
            .join(",")
    );
    match &args.token_file {
        Some(path) => {
            let path = std::path::absolute(path)
                .with_context(|| format!("--token-file {}", path.display()))?;
            write_atomic(
                &Root::live(),
                &path,
                format!("{text}\n").as_bytes(),
                FileAttrs::root(0o600),
            )
            .with_context(|| format!("--token-file {}", path.display()))?;
        }
        None => {
            #[allow(clippy::print_stdout)]
            {
                println!("{text}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(args: TokenListArgs) -> anyhow::Result<ExitCode> {
    let tokens = runtime()?.block_on(async {
        let client = client(&args.admin.kubeconfig).await?;
        api::list_tokens(&client)
            .await
            .context("listing bootstrap tokens")
    })?;
    #[allow(clippy::print_stdout)]
    match args.output {
        OutputArg::Json => println!("{}", serde_json::to_string_pretty(&tokens)?),
        OutputArg::Text => {
            println!(
                "{:<8} {:<22} {:<28} {:<50} DESCRIPTION",
                "ID", "EXPIRES", "USAGES", "GROUPS"
            );
            for t in &tokens {
                println!(
                    "{:<8} {:<22} {:<28} {:<50} {}",
                    t.id,
                    t.expires.as_deref().unwrap_or("never"),
                    t.usages.join(","),
                    t.groups.join(","),
                    t.description
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn delete(args: TokenDeleteArgs) -> anyhow::Result<ExitCode> {
    let ids: Vec<String> = args
        .ids
        .iter()
        .map(|given| {
            // A whole token is accepted; only its id is used or shown.
            let id = given.split('.').next().unwrap_or_default();
            let ok = id.len() == 6
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if ok {
                Ok(id.to_string())
            } else {
                anyhow::bail!("TOKEN_ID: expected a token id of 6 characters [a-z0-9] (or a whole token), got {} character(s)", id.len())
            }
        })
        .collect::<anyhow::Result<_>>()?;
    let missing = runtime()?.block_on(async {
        let client = client(&args.admin.kubeconfig).await?;
        let mut missing = Vec::new();
        for id in &ids {
            if api::delete_token(&client, id)
                .await
                .with_context(|| format!("deleting bootstrap token {id}"))?
            {
                eprintln!("kprov: deleted bootstrap token {id}");
            } else {
                missing.push(id.clone());
            }
        }
        anyhow::Ok(missing)
    })?;
    if missing.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!("no bootstrap token with id {}", missing.join(", "))
    }
}
