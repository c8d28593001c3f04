//! A course's git server for the nbgitpuller test: a container of the base image (git and python3) on a
//! stack's network, serving one bare repository over git's "dumb" HTTP protocol (static files, which
//! `git update-server-info` keeps current) with `python3 -m http.server`. Users' servers reach it by its
//! container name, as they would a school's git server; the stack's teardown removes it (stack label).

use anyhow::{Context, Result, ensure};
use bollard::Docker;
use jhub_docker::contract;

use crate::{docker, wait};

/// The repository's branch, as the nbgitpuller link names it.
pub const BRANCH: &str = "main";

pub struct GitServer {
    docker: Docker,
    id: String,
    /// The repository's URL as the stack's containers reach it.
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
            cmd: Some(vec!["-m".into(), "http.server".into(), "8000".into(), "--directory".into(), "/srv/git".into()]),
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
        let server = GitServer { docker: docker.clone(), id, repo_url: format!("http://{container_name}:8000/{name}.git") };
        let setup = format!(
            "set -e; mkdir -p /srv/git && git init -q --bare -b {BRANCH} /srv/git/{name}.git \
             && git clone -q /srv/git/{name}.git /srv/work 2>/dev/null && cd /srv/work && git checkout -q -b {BRANCH} \
             && git config user.name Teacher && git config user.email teacher@school.example"
        );
        server.shell(&setup).await?;
        server.commit(files, "first week").await?;
        wait::until("the git server to answer", wait::DEFAULT, || async {
            let (code, _) = docker::exec(
                &server.docker,
                &server.id,
                &[
                    "python3",
                    "-c",
                    &format!("import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/{name}.git/info/refs').read()"),
                ],
                None,
            )
            .await?;
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
        script.push_str(&format!(
            " && git add -A && git commit -q -m '{message}' && git push -q origin {BRANCH} && git -C /srv/git/$(ls /srv/git) update-server-info"
        ));
        self.shell(&script).await
    }

    async fn shell(&self, script: &str) -> Result<()> {
        let (code, output) = docker::exec(&self.docker, &self.id, &["sh", "-c", script], None).await?;
        ensure!(code == 0, "the git server's `{script}` failed ({code}): {output}");
        Ok(())
    }
}
