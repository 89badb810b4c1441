//! Where the model and the data come from: a command-line flag, then an environment variable, then the experiment
//! file (paths relative to its folder), then a download into the cache — unless offline, where a missing piece is
//! an error that lists what is missing and how to provide it.

mod unzip;

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::data::{glue_task, GlueTask};
use crate::model::{
    shard_names, weight_files, ModelFolder, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE,
    WEIGHTS_INDEX_FILE,
};
use crate::spec::{BackboneSpec, TaskSpec};
use crate::{Error, Result};

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
        let api = hf_hub::api::sync::ApiBuilder::new()
            .with_cache_dir(hub_cache)
            .with_progress(false)
            .build()
            .map_err(|e| Error::msg(format!("model `{hub_id}`: cannot reach the hub: {e}")))?;
        let repo = api.model(hub_id.to_string());
        let get = |file: &str| {
            repo.get(file).map_err(|e| {
                Error::msg(format!("model `{hub_id}`: downloading {file} failed: {e}"))
            })
        };
        let config = get(CONFIG_FILE)?;
        if needs == ModelNeeds::Everything {
            get(TOKENIZER_FILE)?;
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
    /// when every task is a custom one (their files are named in the experiment).
    pub fn glue_data_for(
        &self,
        flag: Option<&Path>,
        spec_data_dir: Option<&Path>,
        spec_dir: &Path,
        tasks: &[TaskSpec],
    ) -> Result<Option<PathBuf>> {
        let glue: Vec<&GlueTask> = tasks
            .iter()
            .filter(|t| t.custom.is_none())
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
            download_glue(task, &glue_dir)?;
        }
        Ok(Resolved {
            path: glue_dir,
            origin: Origin::Downloaded,
        })
    }
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
    want(TOKENIZER_FILE);
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
    if needs == ModelNeeds::Everything {
        if weight_files(dir).is_err() {
            missing.push(format!(
                "{WEIGHTS_FILE} (or {WEIGHTS_INDEX_FILE} and its shards)"
            ));
        }
        if !dir.join(TOKENIZER_FILE).is_file() {
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

fn glue_files_present(task: &GlueTask, glue_dir: &Path) -> bool {
    let folder = glue_dir.join(task.folder);
    folder.join(task.train_file).is_file() && folder.join(task.eval_file).is_file()
}

const GLUE_BASE: &str = "https://dl.fbaipublicfiles.com/glue/data";

/// The official archive of a GLUE task folder (MRPC is built from the Microsoft corpus instead, as GLUE's own
/// download script does).
fn glue_archive(folder: &str) -> Option<&'static str> {
    Some(match folder {
        "CoLA" => "CoLA.zip",
        "SST-2" => "SST-2.zip",
        "QQP" => "QQP-clean.zip",
        "STS-B" => "STS-B.zip",
        "MNLI" => "MNLI.zip",
        "QNLI" => "QNLIv2.zip",
        "RTE" => "RTE.zip",
        "WNLI" => "WNLI.zip",
        _ => return None,
    })
}

fn fetch(url: &str) -> Result<Vec<u8>> {
    let response = ureq::get(url).call().map_err(|e| {
        Error::msg(format!(
            "downloading {url} failed: {e}; use --data-dir with a local copy"
        ))
    })?;
    let mut bytes = Vec::new();
    response
        .into_reader()
        .read_to_end(&mut bytes)
        .map_err(|e| Error::msg(format!("downloading {url} failed: {e}")))?;
    Ok(bytes)
}

fn download_glue(task: &GlueTask, glue_dir: &Path) -> Result<()> {
    if task.folder == "MRPC" {
        let raw = fetch(
            "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt",
        )?;
        let ids = fetch(&format!("{GLUE_BASE}/mrpc_dev_ids.tsv"))?;
        let to_text = |b: Vec<u8>, what: &str| {
            String::from_utf8(b)
                .map_err(|_| Error::msg(format!("MRPC: downloaded {what} is not UTF-8")))
        };
        let (train, dev) = split_mrpc(&to_text(raw, "corpus")?, &to_text(ids, "dev ids")?)?;
        let dir = glue_dir.join("MRPC");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        for (name, text) in [("train.tsv", train), ("dev.tsv", dev)] {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
        }
        return Ok(());
    }
    let archive = glue_archive(task.folder).ok_or_else(|| {
        Error::msg(format!(
            "no download known for GLUE folder `{}`",
            task.folder
        ))
    })?;
    let bytes = fetch(&format!("{GLUE_BASE}/{archive}"))?;
    unzip::extract(&bytes, glue_dir).map_err(|e| Error::msg(format!("{archive}: {e}")))
}

/// GLUE's MRPC split: the Microsoft corpus's training file divided into `train.tsv` and `dev.tsv` by the pairs
/// listed in `dev_ids` (`id1<TAB>id2` per line). Both outputs keep the corpus's header line.
pub fn split_mrpc(corpus: &str, dev_ids: &str) -> Result<(String, String)> {
    let dev: std::collections::HashSet<(&str, &str)> = dev_ids
        .lines()
        .filter_map(|l| {
            let mut f = l.trim_end_matches('\r').split('\t');
            Some((f.next()?, f.next()?))
        })
        .collect();
    let mut lines = corpus.split_inclusive('\n');
    let header = lines
        .next()
        .ok_or_else(|| Error::msg("MRPC corpus is empty"))?;
    let (mut train, mut dev_out) = (header.to_string(), header.to_string());
    for (i, line) in lines.enumerate() {
        let row = line.trim();
        if row.is_empty() {
            continue;
        }
        let fields: Vec<&str> = row.split('\t').collect();
        if fields.len() != 5 {
            return Err(Error::Data {
                path: PathBuf::from("msr_paraphrase_train.txt"),
                line: i + 2,
                message: format!("expected 5 fields, found {}", fields.len()),
            });
        }
        let out = if dev.contains(&(fields[1], fields[2])) {
            &mut dev_out
        } else {
            &mut train
        };
        out.push_str(&fields.join("\t"));
        out.push('\n');
    }
    Ok((train, dev_out))
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

    #[test]
    fn mrpc_split_follows_dev_ids_and_keeps_the_header() {
        let corpus = "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n1\t1\t2\ta\tb\r\n0\t3\t4\tc\td\r\n";
        let (train, dev) = split_mrpc(corpus, "3\t4\n").expect("splits");
        assert_eq!(
            train,
            "\u{feff}Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\r\n1\t1\t2\ta\tb\n"
        );
        assert!(dev.ends_with("\r\n0\t3\t4\tc\td\n"));
    }
}
