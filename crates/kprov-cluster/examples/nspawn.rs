//! The nspawn target by hand, for trying things out and debugging:
//!
//! ```text
//! cargo run -p kprov-cluster --example nspawn -- prepare
//! cargo run -p kprov-cluster --example nspawn -- create demo-master-1 IMAGE 10.80.0.1/24 [ADDRESS]
//! cargo run -p kprov-cluster --example nspawn -- start|wait|stop|destroy|address|logs demo-master-1
//! cargo run -p kprov-cluster --example nspawn -- run demo-master-1 systemctl status
//! cargo run -p kprov-cluster --example nspawn -- list|destroy-network demo
//! cargo run -p kprov-cluster --example nspawn -- warm IMAGE 10.86.1.1/24 [SECONDS]
//! ```
//!
//! `warm` imports the images a node image's base phase staged into the
//! image's own containerd store ([`warm_containerd`]: one throwaway
//! machine booted on that network, default limit 300 s), so that machines
//! made from it start with them; tools/node-image.sh runs it.
//!
//! Machines live under `$KPROV_MACHINES` (default /var/lib/kprov/machines);
//! `$KPROV_NETNS` names the network namespace of the bridges
//! (e.g. /run/netns/lab), else this process's; `$KPROV_RUN_TIMEOUT`
//! (seconds) bounds `run`.

#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::Duration;

use kprov_cluster::target::nspawn::{warm_containerd, NspawnTarget, DEFAULT_BASE_DIR};
use kprov_cluster::{MachineCommand, MachineName, MachineSpec, Target};

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nspawn: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::var("KPROV_MACHINES").unwrap_or_else(|_| DEFAULT_BASE_DIR.into());
    let mut target = NspawnTarget::new(base)?;
    if let Ok(netns) = std::env::var("KPROV_NETNS") {
        target = target.with_netns(netns);
    }
    let name = |i: usize| -> Result<MachineName, Box<dyn std::error::Error>> {
        Ok(args.get(i).ok_or("missing machine name")?.parse()?)
    };
    match args.first().map(String::as_str) {
        Some("prepare") => {
            for c in target.prepare_host()? {
                println!("{}: {} -> {}", c.what, c.from, c.to);
            }
        }
        Some("create") => {
            let name = name(1)?;
            let image = Some(args.get(2).ok_or("missing image")?.into());
            let network: kprov_cluster::ClusterNetwork =
                args.get(3).ok_or("missing network")?.parse()?;
            let address = match args.get(4) {
                Some(a) => a.parse()?,
                None => network
                    .default_address(&name)
                    .ok_or("no default address for this machine")?,
            };
            let m = target.create(&MachineSpec {
                name,
                image,
                network,
                address,
                labels: Default::default(),
            })?;
            println!("{} {}", m.name, m.address);
        }
        Some("start") => target.start(&name(1)?)?,
        Some("wait") => target.wait_booted(&name(1)?, Duration::from_secs(300))?,
        Some("stop") => target.stop(&name(1)?)?,
        Some("destroy") => target.destroy(&name(1)?)?,
        Some("address") => println!("{}", target.address(&name(1)?)?),
        Some("logs") => println!("{}", target.logs(&name(1)?, 50)?),
        Some("run") => {
            let mut command = MachineCommand::new(args[2..].iter().cloned());
            if let Ok(secs) = std::env::var("KPROV_RUN_TIMEOUT") {
                command = command.timeout(Duration::from_secs(secs.parse()?));
            }
            let out = target.run(&name(1)?, &command)?;
            print!("{}", out.stdout_text());
            eprint!("{}", out.stderr_text());
            if !out.success() {
                return Err(format!("exited {:?}", out.code).into());
            }
        }
        Some("list") => {
            for m in target.list(&args.get(1).ok_or("missing cluster")?.parse()?)? {
                println!("{} {} {:?}", m.name, m.address, m.state);
            }
        }
        Some("destroy-network") => {
            target.destroy_network(&args.get(1).ok_or("missing cluster")?.parse()?)?
        }
        Some("warm") => {
            let image: std::path::PathBuf = args.get(1).ok_or("missing image")?.into();
            let network: kprov_cluster::ClusterNetwork =
                args.get(2).ok_or("missing network")?.parse()?;
            let limit = match args.get(3) {
                Some(secs) => Duration::from_secs(secs.parse()?),
                None => Duration::from_secs(300),
            };
            warm_containerd(&target, &image, network, limit)?;
        }
        _ => return Err("usage: see the example's doc".into()),
    }
    Ok(())
}
