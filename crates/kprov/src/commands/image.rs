//! `kprov image build` and `kprov initrd build`: flags into kprov-image's
//! builds, with the plan printed first and progress lines as they go.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use kprov_image::build::{self, ImageBuild, Step};
use kprov_image::layout::MIB;

use crate::cli::{ImageBuildArgs, ImageCommand, InitrdCommand};

/// Runs `kprov image`.
pub fn run(command: ImageCommand) -> anyhow::Result<ExitCode> {
    match command {
        ImageCommand::Build(args) => build_image(args),
    }
}

fn build_image(args: ImageBuildArgs) -> anyhow::Result<ExitCode> {
    let request = ImageBuild {
        root: args.root,
        output: args.output,
        size: args.size,
        kernel_args: args.kernel_args,
        seed: args.seed,
        level: args.level,
    };
    let plan = build::plan(&request).context("planning the image")?;
    let layout = &plan.layout;
    eprintln!(
        "kprov: image: {} MiB disk, kernel {}; boot partition {} MiB (FAT, SYSLINUX), root partition {} MiB (ext4, PARTUUID {}) for {} MiB of files",
        layout.size / MIB,
        plan.kernel.version,
        layout.boot.size / MIB,
        layout.root.size / MIB,
        layout.root.guid,
        plan.root_bytes.div_ceil(MIB),
    );
    if args.dry_run {
        eprintln!(
            "kprov: image: dry run: nothing written ({} and {} would be)",
            request.output.display(),
            build::manifest_path(&request.output).display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let started = Instant::now();
    let manifest = build::build(&request, &plan, &mut |step| match step {
        Step::Boot => eprintln!("kprov: image: making the boot partition"),
        Step::Root => eprintln!("kprov: image: making the root filesystem"),
        Step::Compress { done, total } => eprintln!(
            "kprov: image: compressing: {}% ({} of {} MiB)",
            done * 100 / total.max(1),
            done / MIB,
            total / MIB
        ),
    })
    .with_context(|| format!("building {}", request.output.display()))?;
    eprintln!(
        "kprov: image: {} written in {:.1} s: {} MiB raw (sha256 {}), {} MiB compressed (sha256 {}); manifest {}",
        request.output.display(),
        started.elapsed().as_secs_f64(),
        manifest.raw.size / MIB,
        manifest.raw.sha256,
        manifest.compressed.size.div_ceil(MIB),
        manifest.compressed.sha256,
        build::manifest_path(&request.output).display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `kprov initrd`.
pub fn run_initrd(command: InitrdCommand) -> anyhow::Result<ExitCode> {
    let InitrdCommand::Build(args) = command;
    let kprov = match args.kprov {
        Some(path) => path,
        None => std::env::current_exe().context("finding this kprov binary")?,
    };
    let request = kprov_image::initrd_build::InitrdBuild {
        root: args.root,
        kernel: args.kernel,
        modules: args.modules,
        kprov,
        output: args.output,
    };
    let built = kprov_image::initrd_build::build_initrd(&request)
        .with_context(|| format!("building {}", request.output.display()))?;
    eprintln!(
        "kprov: initrd: {} written: {} KiB, kernel {}, {} modules; boot it with {}",
        request.output.display(),
        built.size.div_ceil(1024),
        built.kernel,
        built.modules.len(),
        built.kernel_image.display()
    );
    Ok(ExitCode::SUCCESS)
}
