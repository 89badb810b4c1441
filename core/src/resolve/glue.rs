//! Downloading GLUE task folders into the cache: the official archives (MRPC built from the Microsoft corpus, as
//! GLUE's own download script does), each checked against the size and SHA-256 in [`OFFICIAL_FILES`], unpacked into
//! a private temporary folder and renamed into place — so a folder under its task's name is always complete, and an
//! interrupted or corrupted download is never mistaken for data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::download::{Downloader, Expected};
use super::unzip;
use crate::data::GlueTask;
use crate::{Error, Result};

/// Where GLUE's archives are served.
pub const GLUE_BASE: &str = "https://dl.fbaipublicfiles.com/glue/data";
/// The Microsoft Research Paraphrase Corpus's training file, from which MRPC's train/dev split is cut.
pub const MRPC_CORPUS_URL: &str =
    "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt";

/// Size and SHA-256 of the files GLUE's download script fetches, by file name. The values are the ones TensorFlow
/// Datasets records for the same archives (`url_checksums/glue.txt`); the MRPC dev-id list's hash equals that of
/// the `dev_ids.tsv` shipped in GLUE's MRPC folder. `QQP-clean.zip` (the cleaned QQP that replaced `QQP.zip`) has
/// no published hash: it is checked against the length the server declares and the archive's own structure only.
pub const OFFICIAL_FILES: [(&str, u64, &str); 9] = [
    (
        "CoLA.zip",
        376_971,
        "f212fcd832b8f7b435fb991f101abf89f96b933ab400603bf198960dfc32cbff",
    ),
    (
        "SST-2.zip",
        7_439_277,
        "d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa",
    ),
    (
        "STS-B.zip",
        802_872,
        "e60a6393de5a8b5b9bac5020a1554b54e3691f9d600b775bd131e613ac179c85",
    ),
    (
        "MNLI.zip",
        312_783_507,
        "e7c1d896d26ed6caf700110645df426cc2d8ebf02a5ab743d5a5c68ac1c83633",
    ),
    (
        "QNLIv2.zip",
        10_627_589,
        "e634e78627a29adaecd4f955359b22bf5e70f2cbd93b493f2d624138a0c0e5f5",
    ),
    (
        "RTE.zip",
        697_150,
        "6bf86de103ecd335f3441bd43574d23fef87ecc695977a63b82d5efb206556ee",
    ),
    (
        "WNLI.zip",
        28_999,
        "ae0e8e4d16f4d46d4a0a566ec7ecceccfd3fbfaa4a7a4b4e02848c0f2561ac46",
    ),
    (
        "mrpc_dev_ids.tsv",
        6_222,
        "971d7767d81b997fd9060ade0ec23c4fc31cbb226a55d1bd4a1bac474eb81dc7",
    ),
    (
        "msr_paraphrase_train.txt",
        1_047_044,
        "60a9b09084528f0673eedee2b69cb941920f0b8cd0eeccefc464a98768457f89",
    ),
];

/// Where GLUE comes from and what its files must be (tests point it at a local server with their own files).
#[derive(Debug, Clone)]
pub struct GlueSource {
    /// Base URL of the archives and of `mrpc_dev_ids.tsv`.
    pub base_url: String,
    pub mrpc_corpus_url: String,
    /// Expected size and SHA-256 by file name; a file not listed is checked against its declared length only.
    pub expected: BTreeMap<String, Expected>,
    pub downloader: Downloader,
}

impl Default for GlueSource {
    fn default() -> Self {
        GlueSource {
            base_url: GLUE_BASE.to_string(),
            mrpc_corpus_url: MRPC_CORPUS_URL.to_string(),
            expected: OFFICIAL_FILES
                .iter()
                .map(|&(name, size, sha256)| {
                    (
                        name.to_string(),
                        Expected {
                            size,
                            sha256: sha256.to_string(),
                        },
                    )
                })
                .collect(),
            downloader: Downloader::default(),
        }
    }
}

/// The official archive of a GLUE task folder (MRPC has none: see [`split_mrpc`]).
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

/// Whether a task's folder is in `glue_dir` with its training and evaluation files.
pub(super) fn glue_files_present(task: &GlueTask, glue_dir: &Path) -> bool {
    let folder = glue_dir.join(task.folder);
    folder.join(task.train_file).is_file() && folder.join(task.eval_file).is_file()
}

/// A private folder beside the destination for unpacking; removed when dropped (after a rename it is empty).
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl GlueSource {
    fn fetch(&self, url: &str, name: &str) -> Result<Vec<u8>> {
        self.downloader.fetch(url, self.expected.get(name))
    }

    /// Downloads `task`'s folder into `glue_dir` (which exists). Nothing appears under the task's folder name
    /// unless every file was downloaded, checked and written.
    pub(super) fn download(&self, task: &GlueTask, glue_dir: &Path) -> Result<()> {
        let staging = Staging(crate::store::temp_sibling(&glue_dir.join(task.folder))?);
        std::fs::create_dir_all(&staging.0).map_err(|e| Error::io(&staging.0, e))?;
        if task.folder == "MRPC" {
            let raw = self.fetch(&self.mrpc_corpus_url, "msr_paraphrase_train.txt")?;
            let ids = self.fetch(
                &format!("{}/mrpc_dev_ids.tsv", self.base_url),
                "mrpc_dev_ids.tsv",
            )?;
            let to_text = |b: Vec<u8>, what: &str| {
                String::from_utf8(b)
                    .map_err(|_| Error::msg(format!("MRPC: downloaded {what} is not UTF-8")))
            };
            let (train, dev) = split_mrpc(&to_text(raw, "corpus")?, &to_text(ids, "dev ids")?)?;
            let dir = staging.0.join("MRPC");
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            for (name, text) in [("train.tsv", train), ("dev.tsv", dev)] {
                let path = dir.join(name);
                std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
            }
        } else {
            let archive = glue_archive(task.folder).ok_or_else(|| {
                Error::msg(format!(
                    "no download known for GLUE folder `{}`",
                    task.folder
                ))
            })?;
            let bytes = self.fetch(&format!("{}/{archive}", self.base_url), archive)?;
            unzip::extract(&bytes, &staging.0)
                .map_err(|e| Error::msg(format!("{archive}: {e}")))?;
        }
        let unpacked = staging.0.join(task.folder);
        if !glue_files_present(task, &staging.0) {
            return Err(Error::msg(format!(
                "the download of GLUE {} lacks {} or {}",
                task.folder, task.train_file, task.eval_file
            )));
        }
        // The files' bytes reach the disk before the folder gets its name.
        for file in [task.train_file, task.eval_file] {
            let path = unpacked.join(file);
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&path, e))?;
        }
        let target = glue_dir.join(task.folder);
        // An incomplete folder of an older version (it lacks a file, or we would not be here) makes way.
        if target.exists() {
            std::fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?;
        }
        std::fs::rename(&unpacked, &target).map_err(|e| Error::io(&target, e))?;
        crate::store::sync_dir(glue_dir)
    }
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
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::data::glue_task;
    use crate::resolve::unzip::tests::stored_archive;
    use crate::trial::hex_sha256;

    /// How the test server answers one request.
    #[derive(Clone, Copy, Debug)]
    enum Answer {
        Whole,
        /// Declares the whole length, sends half, closes.
        CutShort,
        Status(u16),
        /// Sends the headers, then nothing (a stalled server).
        Stall,
    }

    /// A server on 127.0.0.1 answering requests in turn with `script` (the last entry repeats); returns its base URL
    /// and the paths requested so far.
    fn serve(body: Vec<u8>, script: Vec<Answer>) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { return };
                let mut request = String::new();
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let _ = reader.read_line(&mut request);
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).map_or(true, |n| n == 0)
                        || header.trim().is_empty()
                    {
                        break;
                    }
                }
                log.lock()
                    .expect("log")
                    .push(request.split_whitespace().nth(1).unwrap_or("").to_string());
                let answer = script[n.min(script.len() - 1)];
                let head = |code: u16, len: usize| {
                    format!(
                        "HTTP/1.1 {code} X\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                    )
                };
                let _ = match answer {
                    Answer::Whole => stream
                        .write_all(head(200, body.len()).as_bytes())
                        .and_then(|()| stream.write_all(&body)),
                    Answer::CutShort => stream
                        .write_all(head(200, body.len()).as_bytes())
                        .and_then(|()| stream.write_all(&body[..body.len() / 2])),
                    Answer::Status(code) => stream.write_all(head(code, 0).as_bytes()),
                    Answer::Stall => {
                        let _ = stream.write_all(head(200, body.len()).as_bytes());
                        std::thread::sleep(Duration::from_millis(800));
                        Ok(())
                    }
                };
            }
        });
        (base, seen)
    }

    fn quick(attempts: u32) -> Downloader {
        Downloader {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_millis(300),
            attempts,
            first_backoff: Duration::from_millis(1),
        }
    }

    fn expected(body: &[u8]) -> Expected {
        Expected {
            size: body.len() as u64,
            sha256: hex_sha256(body),
        }
    }

    #[test]
    fn a_broken_transfer_is_retried_and_a_final_failure_names_url_and_reason() {
        let body = b"0123456789abcdef".repeat(64);
        let (base, seen) = serve(
            body.clone(),
            vec![Answer::CutShort, Answer::Status(503), Answer::Whole],
        );
        let url = format!("{base}/file.bin");
        let got = quick(3)
            .fetch(&url, Some(&expected(&body)))
            .expect("third attempt");
        assert_eq!(got, body);
        assert_eq!(seen.lock().unwrap().len(), 3);

        let (base, _) = serve(body.clone(), vec![Answer::CutShort]);
        let url = format!("{base}/file.bin");
        let e = quick(2).fetch(&url, None).unwrap_err().to_string();
        assert!(
            e.contains(&url) && e.contains("after 2 attempts") && e.contains("broke off"),
            "{e}"
        );

        let (base, _) = serve(body.clone(), vec![Answer::Stall]);
        let e = quick(1)
            .fetch(&format!("{base}/slow"), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("slow") && e.contains("broke off"),
            "a stalled read times out: {e}"
        );
    }

    #[test]
    fn a_missing_file_or_wrong_bytes_fail_at_once() {
        let body = b"the real archive".to_vec();
        let (base, seen) = serve(body.clone(), vec![Answer::Status(404)]);
        let e = quick(4)
            .fetch(&format!("{base}/gone.zip"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("HTTP 404") && e.contains("gone.zip"), "{e}");
        assert_eq!(seen.lock().unwrap().len(), 1, "a 404 is not retried");

        let (base, seen) = serve(b"another archive!".to_vec(), vec![Answer::Whole]);
        let e = quick(4)
            .fetch(&format!("{base}/x.zip"), Some(&expected(&body)))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sha256") && e.contains(&hex_sha256(&body)),
            "{e}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn an_interrupted_glue_download_is_never_reused_and_the_next_one_installs_the_folder() {
        let archive = stored_archive(&[
            ("SST-2/train.tsv", b"sentence\tlabel\ngood\t1\nbad\t0\n"),
            ("SST-2/dev.tsv", b"sentence\tlabel\nfine\t1\n"),
        ]);
        let cache = tempfile::tempdir().expect("tmp");
        let glue_dir = cache.path().join("glue");
        std::fs::create_dir_all(&glue_dir).expect("mkdir");
        let task = glue_task("sst2").expect("sst2");
        let source = |base: String| GlueSource {
            base_url: base,
            mrpc_corpus_url: String::new(),
            expected: [("SST-2.zip".to_string(), expected(&archive))]
                .into_iter()
                .collect(),
            downloader: quick(2),
        };

        // Every attempt breaks off: an error, and nothing under the task's name (nor a leftover staging folder).
        let (base, _) = serve(archive.clone(), vec![Answer::CutShort]);
        let e = source(base)
            .download(task, &glue_dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("SST-2.zip") && e.contains("broke off"), "{e}");
        assert!(!glue_files_present(task, &glue_dir));
        assert_eq!(
            std::fs::read_dir(&glue_dir).expect("ls").count(),
            0,
            "staging left behind"
        );

        // The resolver, offline, does not take anything for the data.
        let resolver = |offline: bool, base: String| super::super::Resolver {
            offline,
            cache_dir: cache.path().to_path_buf(),
            env_model: None,
            env_data: None,
            glue: source(base),
        };
        let e = resolver(true, String::new())
            .data(None, None, cache.path(), &[task])
            .unwrap_err()
            .to_string();
        assert!(e.contains("offline") && e.contains("SST-2"), "{e}");

        // Online again with a working server: downloaded, checked, installed; then found in the cache.
        let (base, _) = serve(archive.clone(), vec![Answer::Whole]);
        let got = resolver(false, base)
            .data(None, None, cache.path(), &[task])
            .expect("downloads");
        assert_eq!(got.origin, crate::resolve::Origin::Downloaded);
        assert_eq!(
            std::fs::read_to_string(glue_dir.join("SST-2/dev.tsv")).expect("dev"),
            "sentence\tlabel\nfine\t1\n"
        );
        let got = resolver(true, String::new())
            .data(None, None, cache.path(), &[task])
            .expect("cached");
        assert_eq!(got.origin, crate::resolve::Origin::Cache);
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
