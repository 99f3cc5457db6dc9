//! What a container runs, given that this node pulls no images: the container's `command` +
//! `args` as they are, except for two upstream images whose programs are built into the
//! `dualstack` binary, so upstream's network test manifests run as written:
//!
//! - `agnhost` (`registry.k8s.io/e2e-test-images/agnhost:2.53`, any registry, tag or digest):
//!   its entrypoint is `/agnhost`, so without a `command` the `args` are agnhost's arguments,
//!   and a `command` of `["/agnhost", ...]` or `["agnhost", ...]` is agnhost too. Both run as
//!   `dualstack agnhost ...`.
//! - `pause` (`registry.k8s.io/pause:3.9`, any registry and tag) without a `command`: a process
//!   that waits, `dualstack agnhost pause --exit-zero` (the pause image exits 0 on SIGTERM and
//!   SIGINT, where agnhost's `pause` exits 2 and 1).
//!
//! Any other container without a `command` has nothing to run (the caller says why).

use k8s_openapi::api::core::v1::Container;

use crate::env::command_line;

/// The upstream image a container names, among those built in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinImage {
    /// `.../agnhost[:tag][@digest]`.
    Agnhost,
    /// `.../pause[:tag][@digest]`.
    Pause,
}

/// The built-in image `image` names, if any: the last path component of the reference without
/// its tag and digest is `agnhost` or `pause`, from any registry.
pub fn builtin_image(image: &str) -> Option<BuiltinImage> {
    let without_digest = image.split('@').next().unwrap_or_default();
    let last = without_digest.rsplit('/').next().unwrap_or_default();
    let name = last.split(':').next().unwrap_or_default();
    match name {
        "agnhost" => Some(BuiltinImage::Agnhost),
        "pause" => Some(BuiltinImage::Pause),
        _ => None,
    }
}

/// The argv a container runs, `$(VAR)`-expanded against `env`; `exe` is the `dualstack` binary
/// (its `agnhost` subcommand implements the built-in images). `None` when there is nothing to
/// run: no `command` and no built-in image.
pub fn container_argv(c: &Container, env: &[(String, String)], exe: &str) -> Option<Vec<String>> {
    let image = c.image.as_deref().map(builtin_image).unwrap_or_default();
    let argv = command_line(c, env);
    let builtin = |rest: &[String]| {
        [exe, "agnhost"]
            .into_iter()
            .map(str::to_string)
            .chain(rest.iter().cloned())
            .collect::<Vec<_>>()
    };
    match (image, argv) {
        (Some(BuiltinImage::Agnhost), Some(argv))
            if matches!(argv[0].as_str(), "/agnhost" | "agnhost") =>
        {
            Some(builtin(&argv[1..]))
        }
        (_, Some(argv)) => Some(argv),
        (Some(BuiltinImage::Agnhost), None) => {
            // The entrypoint `/agnhost` with `args` as its arguments.
            let with_entrypoint = Container {
                command: Some(vec!["/agnhost".into()]),
                ..c.clone()
            };
            let argv = command_line(&with_entrypoint, env)?;
            Some(builtin(&argv[1..]))
        }
        (Some(BuiltinImage::Pause), None) => {
            Some(builtin(&["pause".to_string(), "--exit-zero".to_string()]))
        }
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn image_references_name_the_builtin_images_from_any_registry_tag_or_digest() {
        let cases = [
            (
                "registry.k8s.io/e2e-test-images/agnhost:2.53",
                Some(BuiltinImage::Agnhost),
            ),
            (
                "gcr.io/kubernetes-e2e-test-images/agnhost:2.8",
                Some(BuiltinImage::Agnhost),
            ),
            ("agnhost", Some(BuiltinImage::Agnhost)),
            (
                "registry.k8s.io/e2e-test-images/agnhost@sha256:0123abcd",
                Some(BuiltinImage::Agnhost),
            ),
            (
                "localhost:5000/agnhost:2.53@sha256:0123abcd",
                Some(BuiltinImage::Agnhost),
            ),
            ("registry.k8s.io/pause:3.9", Some(BuiltinImage::Pause)),
            ("k8s.gcr.io/pause", Some(BuiltinImage::Pause)),
            ("pause:latest", Some(BuiltinImage::Pause)),
            ("busybox", None),
            ("registry.k8s.io/e2e-test-images/agnhost-other:1", None),
            ("agnhost.example.com:5000/busybox", None),
            ("", None),
        ];
        for (image, want) in cases {
            assert_eq!(builtin_image(image), want, "{image}");
        }
    }

    #[test]
    fn containers_map_to_what_they_run() {
        let exe = "/usr/bin/dualstack";
        let cases: [(serde_json::Value, Option<Vec<&str>>); 11] = [
            (
                serde_json::json!({"image": "registry.k8s.io/e2e-test-images/agnhost:2.53", "args": ["netexec", "--http-port=8080", "--udp-port=8081"]}),
                Some(vec![
                    exe,
                    "agnhost",
                    "netexec",
                    "--http-port=8080",
                    "--udp-port=8081",
                ]),
            ),
            (
                serde_json::json!({"image": "agnhost:2.8", "command": ["/agnhost", "netexec"], "args": ["--http-port=80"]}),
                Some(vec![exe, "agnhost", "netexec", "--http-port=80"]),
            ),
            (
                serde_json::json!({"image": "gcr.io/x/agnhost@sha256:ab", "command": ["agnhost", "serve-hostname"]}),
                Some(vec![exe, "agnhost", "serve-hostname"]),
            ),
            (
                serde_json::json!({"image": "agnhost", "command": ["/bin/sh", "-c", "sleep 1"]}),
                Some(vec!["/bin/sh", "-c", "sleep 1"]),
            ),
            (
                serde_json::json!({"image": "agnhost", "args": ["pause"]}),
                Some(vec![exe, "agnhost", "pause"]),
            ),
            (
                serde_json::json!({"image": "agnhost"}),
                Some(vec![exe, "agnhost"]),
            ),
            (
                serde_json::json!({"image": "registry.k8s.io/pause:3.9"}),
                Some(vec![exe, "agnhost", "pause", "--exit-zero"]),
            ),
            (
                serde_json::json!({"image": "k8s.gcr.io/pause", "command": ["sleep", "5"]}),
                Some(vec!["sleep", "5"]),
            ),
            (
                serde_json::json!({"image": "busybox", "command": ["sleep"], "args": ["5"]}),
                Some(vec!["sleep", "5"]),
            ),
            (
                serde_json::json!({"image": "busybox", "command": ["/agnhost", "pause"]}),
                Some(vec!["/agnhost", "pause"]),
            ),
            (serde_json::json!({"image": "busybox"}), None),
        ];
        for (spec, want) in cases {
            let mut spec = spec;
            spec["name"] = "c".into();
            let c = container(spec.clone());
            assert_eq!(
                container_argv(&c, &[], exe),
                want.map(|w| strings(&w)),
                "{spec}"
            );
        }
    }

    #[test]
    fn agnhost_args_are_expanded_like_any_command() {
        let c = container(serde_json::json!({
            "name": "c",
            "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
            "args": ["netexec", "--http-port=$(PORT)"],
        }));
        let env = vec![("PORT".to_string(), "9000".to_string())];
        assert_eq!(
            container_argv(&c, &env, "/d").unwrap(),
            strings(&["/d", "agnhost", "netexec", "--http-port=9000"])
        );
    }
}
