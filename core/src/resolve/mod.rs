//! Where the model and the data come from: a command-line flag, then an environment variable, then the experiment
//! file (paths relative to its folder), then a download into the cache — unless offline, where a missing piece is
//! an error that lists what is missing and how to provide it.

mod download;
mod glue;
mod unzip;

pub use download::{Downloader, Expected};
pub use glue::{split_mrpc, GlueSource};

use std::path::{Path, PathBuf};

use crate::data::{glue_task, GlueTask};
use crate::model::{
    shard_names, weight_files, ModelFolder, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
};
use crate::spec::{BackboneSpec, TaskSpec};
use crate::{Error, Result};
use glue::glue_files_present;

/// Environment variable naming the backbone folder.
pub const MODEL_ENV: &str = "PEFTSPACE_MODEL";
/// Environment variable naming the folder that holds GLUE's task folders.
pub const DATA_ENV: &str = "PEFTSPACE_DATA";
/// Environment variable naming the cache folder (default: `$XDG_CACHE_HOME/peftspace` or `~/.cache/peftspace`).
pub const CACHE_ENV: &str = "PEFTSPACE_CACHE";

/// What a command needs of a model folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelNeeds {
    /// `config.json` alone: describing the backbone (layers, shapes, parameter count) to sample designs.
    Config,
    /// `config.json`, `tokenizer.json` and the weights (`model.safetensors`, or the index and every shard it
    /// lists): running the model.
    Everything,
    /// `config.json` and the weights, no tokenizer: running the model on token ids given as they are
    /// (`encode --ids`, `generate --ids`).
    Weights,
}

/// Which source a path came from (shown to the user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Environment,
    ExperimentFile,
    /// Found in the cache, downloaded earlier.
    Cache,
    /// Downloaded just now.
    Downloaded,
}

/// A resolved folder and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub path: PathBuf,
    pub origin: Origin,
}

/// Resolves models and data in priority order; holds the environment's values so tests can set them explicitly.
#[derive(Debug, Clone)]
pub struct Resolver {
    /// Never touch the network.
    pub offline: bool,
    pub cache_dir: PathBuf,
    /// Value of [`MODEL_ENV`].
    pub env_model: Option<PathBuf>,
    /// Value of [`DATA_ENV`].
    pub env_data: Option<PathBuf>,
    /// Where GLUE archives are downloaded from, and what they must be.
    pub glue: GlueSource,
}

impl Resolver {
    /// A resolver reading [`MODEL_ENV`], [`DATA_ENV`] and [`CACHE_ENV`] from the process environment.
    pub fn from_env(offline: bool) -> Self {
        let non_empty = |name: &str| {
            std::env::var_os(name)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Resolver {
            offline,
            cache_dir: non_empty(CACHE_ENV).unwrap_or_else(default_cache_dir),
            env_model: non_empty(MODEL_ENV),
            env_data: non_empty(DATA_ENV),
            glue: GlueSource::default(),
        }
    }

    /// The backbone folder: `flag` > [`MODEL_ENV`] > the experiment's `backbone.path` > `backbone.hub_id` from the
    /// cache (downloaded there first when online).
    pub fn model(
        &self,
        flag: Option<&Path>,
        spec: &BackboneSpec,
        spec_dir: &Path,
        needs: ModelNeeds,
    ) -> Result<Resolved> {
        let local = [
            (flag.map(Path::to_path_buf), Origin::Flag),
            (self.env_model.clone(), Origin::Environment),
            (
                spec.path.as_ref().map(|p| spec_dir.join(p)),
                Origin::ExperimentFile,
            ),
        ];
        if let Some((path, origin)) = local.into_iter().find_map(|(p, o)| p.map(|p| (p, o))) {
            check_model_dir(&path, origin, needs)?;
            return Ok(Resolved { path, origin });
        }
        let Some(hub_id) = &spec.hub_id else {
            return Err(Error::Missing(format!(
                "no backbone given: pass --model DIR, set {MODEL_ENV}, or set `backbone: (path: \"DIR\")` or \
                 `backbone: (hub_id: \"org/name\")` in the experiment file"
            )));
        };
        self.hub_model(hub_id, needs)
    }

    /// [`Resolver::model`], opened as a [`ModelFolder`].
    pub fn model_folder(
        &self,
        flag: Option<&Path>,
        spec: &BackboneSpec,
        spec_dir: &Path,
        needs: ModelNeeds,
    ) -> Result<ModelFolder> {
        ModelFolder::open(self.model(flag, spec, spec_dir, needs)?.path)
    }

    fn hub_model(&self, hub_id: &str, needs: ModelNeeds) -> Result<Resolved> {
        let hub_cache = self.cache_dir.join("hub");
        let cached = hf_hub::Cache::new(hub_cache.clone()).model(hub_id.to_string());
        let missing = missing_in_cache(&cached, needs);
        if missing.is_empty() {
            let config = cached.get(CONFIG_FILE).ok_or_else(|| {
                Error::msg(format!("model `{hub_id}`: the cache lost {CONFIG_FILE}"))
            })?;
            return Ok(Resolved {
                path: parent(&config)?,
                origin: Origin::Cache,
            });
        }
        if self.offline {
            return Err(Error::Missing(format!(
                "offline: model `{hub_id}` is not in the cache {} (missing: {}); run once without --offline to \
                 download it, or pass --model DIR / set {MODEL_ENV}",
                hub_cache.display(),
                missing.join(", ")
            )));
        }
        // hf-hub downloads into a `.part` file renamed when complete, and resumes a broken transfer with back-off.
        let api = hf_hub::api::sync::ApiBuilder::new()
            .with_cache_dir(hub_cache)
            .with_progress(false)
            .with_retries(HUB_RETRIES)
            .build()
            .map_err(|e| Error::msg(format!("model `{hub_id}`: cannot reach the hub: {e}")))?;
        let repo = api.model(hub_id.to_string());
        let get = |file: &str| {
            let path = repo.get(file).map_err(|e| {
                Error::msg(format!("model `{hub_id}`: downloading {file} failed: {e}"))
            })?;
            verify_hub_file(hub_id, file, &path)?;
            Ok::<_, Error>(path)
        };
        let config = get(CONFIG_FILE)?;
        if needs != ModelNeeds::Config {
            if needs == ModelNeeds::Everything {
                get(TOKENIZER_FILE)?;
            }
            // Single-file weights when the repository has them, else the index and its shards.
            if get(WEIGHTS_FILE).is_err() {
                let index = get(WEIGHTS_INDEX_FILE).map_err(|e| {
                    Error::msg(format!(
                        "{e} (and {WEIGHTS_FILE} could not be downloaded either): the repository needs \
                         safetensors weights"
                    ))
                })?;
                let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
                let shards = shard_names(&text).map_err(|message| Error::Model {
                    path: index.clone(),
                    message,
                })?;
                for shard in shards {
                    get(&shard)?;
                }
            }
        }
        Ok(Resolved {
            path: parent(&config)?,
            origin: Origin::Downloaded,
        })
    }

    /// The GLUE folder for an experiment's `tasks`: [`Resolver::data`] over the GLUE tasks among them, `None`
    /// when every task is a custom or generation one (their files are named in the experiment).
    pub fn glue_data_for(
        &self,
        flag: Option<&Path>,
        spec_data_dir: Option<&Path>,
        spec_dir: &Path,
        tasks: &[TaskSpec],
    ) -> Result<Option<PathBuf>> {
        let glue: Vec<&GlueTask> = tasks
            .iter()
            .filter(|t| t.is_glue())
            .map(|t| glue_task(&t.id))
            .collect::<Result<_>>()?;
        if glue.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.data(flag, spec_data_dir, spec_dir, &glue)?.path))
    }

    /// The folder holding GLUE's task folders: `flag` > [`DATA_ENV`] > the experiment's `data_dir` > the cache's
    /// `glue` folder, where the official archives of `tasks` are downloaded when online and missing.
    pub fn data(
        &self,
        flag: Option<&Path>,
        spec_data_dir: Option<&Path>,
        spec_dir: &Path,
        tasks: &[&GlueTask],
    ) -> Result<Resolved> {
        let local = [
            (flag.map(Path::to_path_buf), Origin::Flag),
            (self.env_data.clone(), Origin::Environment),
            (
                spec_data_dir.map(|p| spec_dir.join(p)),
                Origin::ExperimentFile,
            ),
        ];
        if let Some((path, origin)) = local.into_iter().find_map(|(p, o)| p.map(|p| (p, o))) {
            if !path.is_dir() {
                return Err(Error::Missing(format!(
                    "data folder {} ({}) does not exist",
                    path.display(),
                    origin_name(origin)
                )));
            }
            return Ok(Resolved { path, origin });
        }
        let glue_dir = self.cache_dir.join("glue");
        let missing: Vec<&GlueTask> = tasks
            .iter()
            .copied()
            .filter(|t| !glue_files_present(t, &glue_dir))
            .collect();
        if missing.is_empty() {
            return Ok(Resolved {
                path: glue_dir,
                origin: Origin::Cache,
            });
        }
        if self.offline {
            let names: Vec<&str> = missing.iter().map(|t| t.folder).collect();
            return Err(Error::Missing(format!(
                "offline: GLUE data for {} is not in the cache {}; run once without --offline to download it, or \
                 pass --data-dir DIR / set {DATA_ENV} (DIR holds GLUE's task folders)",
                names.join(", "),
                glue_dir.display()
            )));
        }
        std::fs::create_dir_all(&glue_dir).map_err(|e| Error::io(&glue_dir, e))?;
        for task in missing {
            // A failed download is the user's to resolve (exit 2): say which folder would have avoided it.
            self.glue.download(task, &glue_dir).map_err(|e| {
                Error::Missing(format!(
                    "GLUE data for {} is not here and could not be downloaded into {}: {e}. Pass --data-dir DIR \
                     or set {DATA_ENV} (DIR holds GLUE's task folders, e.g. DIR/{}/train.tsv), or set `data_dir` \
                     in the experiment file",
                    task.folder,
                    glue_dir.display(),
                    task.folder
                ))
            })?;
        }
        Ok(Resolved {
            path: glue_dir,
            origin: Origin::Downloaded,
        })
    }
}

/// Further attempts at a hub file after the first fails.
const HUB_RETRIES: usize = 3;

/// Checks a file the hub client put in the cache against its ETag: for files kept in Git LFS (weights) the ETag,
/// which names the blob, is the SHA-256 of the content. A mismatch removes the blob and its link, so the next run
/// downloads again, and is an error naming the file and both hashes. Other files (small JSON, ETag = git SHA-1)
/// pass.
fn verify_hub_file(hub_id: &str, file: &str, path: &Path) -> Result<()> {
    let blob = std::fs::canonicalize(path).map_err(|e| Error::io(path, e))?;
    let etag = blob
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    if etag.len() != 64 || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    let found = crate::store::sha256_file(&blob)?;
    if found == etag.to_ascii_lowercase() {
        return Ok(());
    }
    let _ = std::fs::remove_file(&blob);
    let _ = std::fs::remove_file(path);
    Err(Error::msg(format!(
        "model `{hub_id}`: downloaded {file} is corrupt (sha256 {found}, the hub's ETag says {etag}); it was \
         removed from the cache, run again to download it anew"
    )))
}

fn origin_name(origin: Origin) -> &'static str {
    match origin {
        Origin::Flag => "from the command line",
        Origin::Environment => "from the environment",
        Origin::ExperimentFile => "from the experiment file",
        Origin::Cache => "from the cache",
        Origin::Downloaded => "downloaded",
    }
}

fn parent(path: &Path) -> Result<PathBuf> {
    path.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| Error::msg(format!("{} has no parent folder", path.display())))
}

/// `$XDG_CACHE_HOME/peftspace`, else `~/.cache/peftspace`, else `.peftspace-cache`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("peftspace");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("peftspace"),
        None => PathBuf::from(".peftspace-cache"),
    }
}

/// The files of a model cached from the hub that `needs` asks for and the cache lacks (shards included when an
/// index is cached).
fn missing_in_cache(cached: &hf_hub::CacheRepo, needs: ModelNeeds) -> Vec<String> {
    let mut missing: Vec<String> = Vec::new();
    let mut want = |file: &str| {
        if cached.get(file).is_none() {
            missing.push(file.to_string());
        }
    };
    want(CONFIG_FILE);
    if needs == ModelNeeds::Config {
        return missing;
    }
    if needs == ModelNeeds::Everything {
        want(TOKENIZER_FILE);
    }
    if cached.get(WEIGHTS_FILE).is_some() {
        return missing;
    }
    let shards = cached
        .get(WEIGHTS_INDEX_FILE)
        .and_then(|index| std::fs::read_to_string(index).ok())
        .and_then(|text| shard_names(&text).ok());
    match shards {
        Some(shards) => {
            for shard in shards {
                if cached.get(&shard).is_none() {
                    missing.push(shard);
                }
            }
        }
        None => missing.push(format!(
            "{WEIGHTS_FILE} (or {WEIGHTS_INDEX_FILE} and its shards)"
        )),
    }
    missing
}

fn check_model_dir(dir: &Path, origin: Origin, needs: ModelNeeds) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::Model {
            path: dir.to_path_buf(),
            message: format!(
                "no such folder ({}), so {} cannot be read",
                origin_name(origin),
                dir.join(CONFIG_FILE).display()
            ),
        });
    }
    let mut missing: Vec<String> = Vec::new();
    if !dir.join(CONFIG_FILE).is_file() {
        missing.push(CONFIG_FILE.to_string());
    }
    if needs != ModelNeeds::Config {
        if weight_files(dir).is_err() {
            missing.push(format!(
                "{WEIGHTS_FILE} (or {WEIGHTS_INDEX_FILE} and its shards)"
            ));
        }
        if needs == ModelNeeds::Everything && !dir.join(TOKENIZER_FILE).is_file() {
            missing.push(TOKENIZER_FILE.to_string());
        }
    }
    if !missing.is_empty() {
        return Err(Error::Model {
            path: dir.to_path_buf(),
            message: format!(
                "missing {} ({}); a backbone folder holds a Hugging Face model's config.json, model.safetensors \
                 (or sharded safetensors with their index) and tokenizer.json",
                missing.join(", "),
                origin_name(origin)
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::glue_task;

    fn resolver(offline: bool, cache: &Path) -> Resolver {
        Resolver {
            offline,
            cache_dir: cache.to_path_buf(),
            env_model: None,
            env_data: None,
            glue: GlueSource::default(),
        }
    }

    fn model_dir(root: &Path, name: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        for f in [CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE] {
            std::fs::write(dir.join(f), "{}").expect("write");
        }
        dir
    }

    #[test]
    fn model_priority_is_flag_env_experiment() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (a, b, c) = (
            model_dir(tmp.path(), "a"),
            model_dir(tmp.path(), "b"),
            model_dir(tmp.path(), "c"),
        );
        let spec = BackboneSpec {
            path: Some(PathBuf::from("c")),
            hub_id: Some("org/never-used".into()),
        };
        let mut r = resolver(true, &tmp.path().join("cache"));
        r.env_model = Some(b.clone());
        assert_eq!(
            r.model(Some(&a), &spec, tmp.path(), ModelNeeds::Everything)
                .expect("flag")
                .path,
            a
        );
        let got = r
            .model(None, &spec, tmp.path(), ModelNeeds::Everything)
            .expect("env");
        assert_eq!((got.path, got.origin), (b, Origin::Environment));
        r.env_model = None;
        let got = r
            .model(None, &spec, tmp.path(), ModelNeeds::Everything)
            .expect("experiment, relative to its folder");
        assert_eq!((got.path, got.origin), (c, Origin::ExperimentFile));
    }

    #[test]
    fn model_folder_missing_files_are_named() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("m");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("config.json"), "{}").expect("write");
        let e = resolver(true, tmp.path()).model(
            Some(&dir),
            &BackboneSpec {
                path: None,
                hub_id: None,
            },
            tmp.path(),
            ModelNeeds::Everything,
        );
        let e = e.expect_err("incomplete").to_string();
        assert!(
            e.contains("missing model.safetensors (or model.safetensors.index.json and its shards), tokenizer.json"),
            "{e}"
        );
    }

    #[test]
    fn offline_never_downloads_and_says_what_is_missing() {
        let tmp = tempfile::tempdir().expect("tmp");
        let r = resolver(true, tmp.path());
        let spec = BackboneSpec {
            path: None,
            hub_id: Some("sentence-transformers/all-MiniLM-L6-v2".into()),
        };
        let e = r
            .model(None, &spec, tmp.path(), ModelNeeds::Everything)
            .expect_err("not cached")
            .to_string();
        assert!(
            e.contains("offline") && e.contains("config.json") && e.contains("--model"),
            "{e}"
        );
        let tasks = [
            glue_task("sst2").expect("sst2"),
            glue_task("mrpc").expect("mrpc"),
        ];
        let e = r
            .data(None, None, tmp.path(), &tasks)
            .expect_err("not cached")
            .to_string();
        assert!(e.contains("SST-2, MRPC") && e.contains("--data-dir"), "{e}");
        let e = r
            .model(
                None,
                &BackboneSpec {
                    path: None,
                    hub_id: None,
                },
                tmp.path(),
                ModelNeeds::Everything,
            )
            .expect_err("nothing");
        assert!(e.to_string().contains(MODEL_ENV));
    }

    #[test]
    fn cached_glue_folder_is_used_offline() {
        let tmp = tempfile::tempdir().expect("tmp");
        let sst = tmp.path().join("glue/SST-2");
        std::fs::create_dir_all(&sst).expect("mkdir");
        std::fs::write(sst.join("train.tsv"), "sentence\tlabel\n").expect("write");
        std::fs::write(sst.join("dev.tsv"), "sentence\tlabel\n").expect("write");
        let got = resolver(true, tmp.path()).data(
            None,
            None,
            tmp.path(),
            &[glue_task("sst2").expect("sst2")],
        );
        assert_eq!(got.expect("cached").origin, Origin::Cache);
    }

    #[cfg(unix)]
    #[test]
    fn a_hub_blob_whose_bytes_do_not_match_its_etag_is_removed_and_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let blobs = tmp.path().join("blobs");
        let snapshot = tmp.path().join("snapshots/abc");
        std::fs::create_dir_all(&blobs).expect("mkdir");
        std::fs::create_dir_all(&snapshot).expect("mkdir");
        let good = b"weights".to_vec();
        let etag = crate::trial::hex_sha256(&good);
        std::fs::write(blobs.join(&etag), &good).expect("write");
        let link = snapshot.join(WEIGHTS_FILE);
        std::os::unix::fs::symlink(blobs.join(&etag), &link).expect("link");
        verify_hub_file("org/m", WEIGHTS_FILE, &link).expect("intact");
        std::fs::write(blobs.join(&etag), b"weigh").expect("truncate");
        let e = verify_hub_file("org/m", WEIGHTS_FILE, &link)
            .unwrap_err()
            .to_string();
        assert!(e.contains("corrupt") && e.contains(&etag), "{e}");
        assert!(
            !blobs.join(&etag).exists() && !link.exists(),
            "the bad blob stays in the cache"
        );
        // A small file (git SHA-1 ETag) is not hashed.
        let sha1 = "a".repeat(40);
        std::fs::write(blobs.join(&sha1), b"{}").expect("write");
        std::os::unix::fs::symlink(blobs.join(&sha1), snapshot.join(CONFIG_FILE)).expect("link");
        verify_hub_file("org/m", CONFIG_FILE, &snapshot.join(CONFIG_FILE))
            .expect("not an LFS file");
    }
}
