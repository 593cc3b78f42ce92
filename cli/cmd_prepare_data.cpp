// tegemma prepare-data corpus|tokenize|inspect: the corpus and token-file steps of ci/prepare_data.sh
// (spm_train runs between the first two). See common/data.h for the formats.
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "common/args.h"
#include "common/check.h"
#include "common/data.h"
#include "common/file_io.h"
#include "common/tokenizer.h"

namespace tg::cli {

namespace {

std::string hex64(uint64_t v) {
  char buf[19];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

nlohmann::json header_json(const TokenFileHeader& h) {
  return {{"version", h.version},
          {"token_bytes", h.token_bytes},
          {"vocab_size", h.vocab_size},
          {"bos_id", h.bos_id},
          {"eos_id", h.eos_id},
          {"train_tokens", h.train_tokens},
          {"val_tokens", h.val_tokens},
          {"train_docs", h.train_docs},
          {"val_docs", h.val_docs},
          {"tokenizer_fingerprint", hex64(h.tokenizer_fingerprint)},
          {"split_seed", h.split_seed},
          {"checksum", hex64(h.checksum)}};
}

int run_corpus(Args args) {
  ArgParser p("tegemma prepare-data corpus",
              "clean the fortune files into corpus.jsonl (one document a line) and spm_train's line file");
  p.option("fortunes", "directory of strfile fortune files", "/usr/share/games/fortunes")
      .option("out", "corpus output (.jsonl)", "", true)
      .option("spm-lines", "spm_train input: every non-empty line of every document", "", true);
  p.parse(args);
  if (p.help_requested()) {
    std::printf("%s", p.usage().c_str());
    return 0;
  }
  CorpusStats st;
  const auto docs = read_fortune_corpus(p.get("fortunes"), &st);
  TG_CHECK(!docs.empty(), "no documents found in '", p.get("fortunes"), "'");
  write_file_atomic(p.get("out"), corpus_to_jsonl(docs));
  std::string lines;
  int64_t n_lines = 0;
  for (const auto& d : docs) {
    size_t pos = 0;
    while (pos <= d.size()) {
      size_t eol = d.find('\n', pos);
      if (eol == std::string::npos) eol = d.size();
      if (eol > pos) {
        lines.append(d, pos, eol - pos);
        lines += '\n';
        ++n_lines;
      }
      pos = eol + 1;
    }
  }
  write_file_atomic(p.get("spm-lines"), lines);
  const nlohmann::json j = {{"files", st.files},         {"entries", st.entries}, {"duplicates", st.duplicates},
                            {"documents", st.documents}, {"bytes", st.bytes},     {"spm_lines", n_lines}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

int run_tokenize(Args args) {
  ArgParser p("tegemma prepare-data tokenize",
              "tokenize corpus.jsonl with our SentencePiece tokenizer into a token file with a train/validation "
              "split by document");
  p.option("corpus", "corpus (.jsonl, {\"text\": ...} a line)", "", true)
      .option("tokenizer", "SentencePiece .model (BPE)", "", true)
      .option("out", "token file to write", "", true)
      .option("val-fraction", "fraction of the documents held out for validation", "0.02")
      .option("seed", "seed of the document shuffle before the split", "20240601");
  p.parse(args);
  if (p.help_requested()) {
    std::printf("%s", p.usage().c_str());
    return 0;
  }
  const auto tok = Tokenizer::from_file(p.get("tokenizer"));
  const auto docs = read_corpus_jsonl(p.get("corpus"));
  TG_CHECK(docs.size() >= 2, "corpus '", p.get("corpus"), "' has ", docs.size(), " documents, need at least 2");
  const double frac = p.get_double("val-fraction", 0.0, 0.5);
  const auto seed = static_cast<uint64_t>(p.get_int("seed", 0));
  const TokenFileHeader h = tokenize_corpus(tok, docs, frac, seed, p.get("out"));
  int64_t bytes = 0;
  for (const auto& d : docs) bytes += static_cast<int64_t>(d.size());
  nlohmann::json j = header_json(h);
  j["out"] = p.get("out");
  j["corpus_bytes"] = bytes;
  j["bytes_per_token"] = static_cast<double>(bytes) / static_cast<double>(h.train_tokens + h.val_tokens);
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

int run_inspect(Args args) {
  ArgParser p("tegemma prepare-data inspect",
              "validate a token file (header, size, checksum, token range) and print its header as JSON");
  p.option("tokens", "token file", "", true)
      .option("tokenizer", "check the file was made by this .model, and decode the start of each split", "")
      .option("show", "tokens of each split to decode with --tokenizer", "64");
  p.parse(args);
  if (p.help_requested()) {
    std::printf("%s", p.usage().c_str());
    return 0;
  }
  const TokenDataset data(p.get("tokens"));
  nlohmann::json j = header_json(data.header());
  if (p.given("tokenizer")) {
    const auto tok = Tokenizer::from_file(p.get("tokenizer"));
    if (tok.fingerprint() != data.header().tokenizer_fingerprint) {
      std::fprintf(stderr, "tegemma prepare-data inspect: '%s' was not made by '%s' (fingerprint %s, file says %s)\n",
                   p.get("tokens").c_str(), p.get("tokenizer").c_str(), hex64(tok.fingerprint()).c_str(),
                   hex64(data.header().tokenizer_fingerprint).c_str());
      return 1;
    }
    const auto show = static_cast<uint64_t>(p.get_int("show", 0, 1 << 20));
    for (const auto s : {Split::Train, Split::Validation}) {
      std::vector<int32_t> ids(std::min<uint64_t>(show, data.size(s)));
      data.read(s, 0, ids.size(), ids.data());
      DecodeOptions keep;
      keep.skip_special = false;
      j[s == Split::Train ? "train_head" : "val_head"] = tok.decode(ids, keep);
    }
  }
  std::printf("%s\n", j.dump(2).c_str());
  return 0;
}

}  // namespace

int cmd_prepare_data(Args args) {
  const std::string usage =
      "usage: tegemma prepare-data corpus|tokenize|inspect [options]   (tegemma prepare-data <step> --help)\n"
      "  corpus    clean the fortune files into corpus.jsonl and spm_train's line file\n"
      "  tokenize  corpus.jsonl + tokenizer .model -> token file (train/validation split by document)\n"
      "  inspect   validate a token file and print its header\n"
      "ci/prepare_data.sh runs the whole pipeline (spm_train between corpus and tokenize).\n";
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::printf("%s", usage.c_str());
    return args.empty() ? 2 : 0;
  }
  const std::string step = args[0];
  const Args rest = args.subspan(1);
  if (step == "corpus") return run_corpus(rest);
  if (step == "tokenize") return run_tokenize(rest);
  if (step == "inspect") return run_inspect(rest);
  throw UsageError("prepare-data: unknown step '" + step + "' (corpus, tokenize or inspect)");
}

}  // namespace tg::cli
