//! A course's git server for the nbgitpuller test: a container of the base image (git and python3) on a
//! stack's network, serving one bare repository over git's smart HTTP protocol, as a school's git server
//! does (nbgitpuller clones shallow, which git's static "dumb" protocol cannot serve): a few lines of
//! Python in front of `git upload-pack --stateless-rpc` (the base leaves out git-http-backend). Users'
//! servers reach it by its container name; the stack's teardown removes it (stack label).

use anyhow::{Context, Result, ensure};
use bollard::Docker;
use jhub_docker::contract;

use crate::{docker, wait};

/// The repository's branch, as the nbgitpuller link names it.
pub const BRANCH: &str = "main";

/// Git's smart HTTP protocol for fetches: `GET <repo>/info/refs?service=git-upload-pack` advertises the
/// refs, `POST <repo>/git-upload-pack` answers a fetch (its body gzipped by git when over 1 KiB), each by
/// `git upload-pack --stateless-rpc`, for the repositories under /srv/git only.
const SMART_HTTP: &str = r##"
import gzip, http.server, os, subprocess

ROOT = "/srv/git"

def repository(path, suffix):
    # `course` and `course.git` both name /srv/git/course.git, as on the usual git hosts.
    name = path[: -len(suffix)].strip("/")
    for candidate in (name, name + ".git"):
        folder = os.path.realpath(os.path.join(ROOT, candidate))
        if name and folder.startswith(ROOT + "/") and os.path.isdir(folder):
            return folder
    return None

class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, kind, body):
        self.send_response(200)
        self.send_header("Content-Type", f"application/x-git-upload-pack-{kind}")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path, _, query = self.path.partition("?")
        repo = repository(path, "/info/refs") if path.endswith("/info/refs") else None
        if repo is None or query != "service=git-upload-pack":
            return self.send_error(404)
        refs = subprocess.run(["git", "upload-pack", "--stateless-rpc", "--advertise-refs", repo], capture_output=True, check=True).stdout
        service = b"# service=git-upload-pack\n"
        self.answer("advertisement", b"%04x" % (len(service) + 4) + service + b"0000" + refs)

    def do_POST(self):
        path = self.path.partition("?")[0]
        repo = repository(path, "/git-upload-pack") if path.endswith("/git-upload-pack") else None
        if repo is None:
            return self.send_error(404)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        result = subprocess.run(["git", "upload-pack", "--stateless-rpc", repo], input=body, capture_output=True, check=True).stdout
        self.answer("result", result)

http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Handler).serve_forever()
"##;

pub struct GitServer {
    docker: Docker,
    id: String,
    /// The repository's URL as the stack's containers reach it (no `.git`, as the usual hosts show it: a
    /// clone's folder is the URL's last part).
    pub repo_url: String,
}

impl GitServer {
    /// Starts the server on `network` (labelled with `project`'s stack) from `image` (the base's id) with a
    /// repository `<name>.git` holding `files` in its first commit.
    pub async fn start(
        docker: &Docker,
        image: &str,
        project: &str,
        network: &str,
        name: &str,
        files: &[(&str, &str)],
    ) -> Result<GitServer> {
        let container_name = format!("{project}-git");
        let config = bollard::models::ContainerCreateBody {
            image: Some(image.to_string()),
            entrypoint: Some(vec!["python3".into()]),
            cmd: Some(vec!["-c".into(), SMART_HTTP.into()]),
            user: Some("0:0".into()),
            labels: Some(
                [
                    (contract::STACK_LABEL.to_string(), project.to_string()),
                    (contract::PURPOSE_LABEL.to_string(), "test-git-server".to_string()),
                ]
                .into(),
            ),
            host_config: Some(bollard::models::HostConfig { network_mode: Some(network.to_string()), ..Default::default() }),
            ..Default::default()
        };
        let options = bollard::query_parameters::CreateContainerOptionsBuilder::default().name(&container_name).build();
        let id = docker.create_container(Some(options), config).await.context("cannot create the git server")?.id;
        docker.start_container(&id, None::<bollard::query_parameters::StartContainerOptions>).await?;
        let server = GitServer { docker: docker.clone(), id, repo_url: format!("http://{container_name}:8000/{name}") };
        let setup = format!(
            "set -e; mkdir -p /srv/git && git init -q --bare -b {BRANCH} /srv/git/{name}.git \
             && git clone -q /srv/git/{name}.git /srv/work 2>/dev/null && cd /srv/work && git checkout -q -b {BRANCH} \
             && git config user.name Teacher && git config user.email teacher@school.example"
        );
        server.shell(&setup).await?;
        server.commit(files, "first week").await?;
        wait::until("the git server to answer", wait::DEFAULT, || async {
            let probe = format!("git ls-remote http://127.0.0.1:8000/{name}.git {BRANCH}");
            let (code, _) = docker::exec(&server.docker, &server.id, &["sh", "-c", &probe], None).await?;
            Ok((code == 0).then_some(()))
        })
        .await?;
        Ok(server)
    }

    /// Writes `files` (path, content) into the repository as one commit, as the teacher pushing a change.
    pub async fn commit(&self, files: &[(&str, &str)], message: &str) -> Result<()> {
        let mut script = String::from("set -e; cd /srv/work");
        for (path, content) in files {
            script
                .push_str(&format!(" && mkdir -p \"$(dirname '{path}')\" && printf '%s' '{}' > '{path}'", content.replace('\'', r"'\''")));
        }
        script.push_str(&format!(" && git add -A && git commit -q -m '{message}' && git push -q origin {BRANCH}"));
        self.shell(&script).await
    }

    async fn shell(&self, script: &str) -> Result<()> {
        let (code, output) = docker::exec(&self.docker, &self.id, &["sh", "-c", script], None).await?;
        ensure!(code == 0, "the git server's `{script}` failed ({code}): {output}");
        Ok(())
    }
}
