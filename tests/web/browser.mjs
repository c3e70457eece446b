// The browser test's script (run by tests/web/browser.rs): Debian's chromium, headless, driven by
// playwright-core, against a real `h2chat serve --tls-self-signed`, with a scripted `h2chat chat`
// in the same room. Every wait has a deadline naming what it waited for; any failure exits 1.
//
// Environment: H2CHAT_URL (https://127.0.0.1:PORT), H2CHAT_BIN, H2CHAT_ADDR, H2CHAT_CA,
// H2CHAT_TOOLS (tests/tools, where playwright-core is installed), H2CHAT_SCREENSHOT.
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";

const env = process.env;
const require = createRequire(join(env.H2CHAT_TOOLS, "package.json"));
const { chromium } = require("playwright-core");
const PATIENCE = 20_000;
const XSS = "<img src=x onerror=alert(1)>";

function fail(message) {
  console.error(`browser test failed: ${message}`);
  process.exit(1);
}

async function within(what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${PATIENCE} ms waiting for ${what}`)), PATIENCE);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The scripted terminal client: lines in on stdin, lines out collected. */
function terminal(name) {
  const child = spawn(
    env.H2CHAT_BIN,
    ["chat", "--addr", env.H2CHAT_ADDR, "--room", "web", "--name", name, "--ca", env.H2CHAT_CA, "--tls-server-name", "localhost"],
    { stdio: ["pipe", "pipe", "pipe"], env: { ...env, RUST_LOG: "" } },
  );
  const out = [];
  let waiters = [];
  let buffered = "";
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk) => {
    buffered += chunk;
    const lines = buffered.split("\n");
    buffered = lines.pop();
    out.push(...lines);
    waiters = waiters.filter((w) => !w());
  });
  child.stderr.on("data", (chunk) => process.stderr.write(`[${name} stderr] ${chunk}`));
  return {
    child,
    out,
    send: (line) => child.stdin.write(`${line}\n`),
    expect: (what, want) =>
      within(`the terminal client to print ${what}`, new Promise((resolve) => {
        const check = () => {
          const line = out.find(want);
          if (line !== undefined) resolve(line);
          return line !== undefined;
        };
        if (!check()) waiters.push(check);
      })),
  };
}

/** The texts of the page's messages, in order, with their sequence numbers. */
const messages = (page) =>
  page.$$eval("#log li.message", (lis) => lis.map((li) => ({ seq: li.dataset.seq, text: li.querySelector(".text").textContent })));

async function waitText(page, who, text) {
  await within(`${who} to show ${JSON.stringify(text)}`, page.waitForFunction(
    (t) => [...document.querySelectorAll("#log li.message .text")].some((e) => e.textContent === t),
    text,
    { timeout: 0, polling: 50 },
  ));
}

async function joined(page, who) {
  await within(`${who} to join`, page.waitForFunction(
    () => document.getElementById("status").textContent.startsWith("Joined") && !document.getElementById("text").disabled,
    null,
    { timeout: 0, polling: 50 },
  ));
}

async function say(page, text) {
  await page.fill("#text", text);
  await page.click("#send-button");
}

// A fresh profile every run (playwright passes it as --user-data-dir): the test's directory,
// which it removes whatever happens here, else one of our own.
const profile = env.H2CHAT_PROFILE ?? mkdtempSync(join(tmpdir(), "h2chat-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
  ],
  ignoreHTTPSErrors: true,
  viewport: { width: 900, height: 600 },
});
let term;
try {
  const alerts = [];
  const open = async (name) => {
    const page = await context.newPage();
    page.on("dialog", (d) => { alerts.push(d.message()); d.dismiss(); });
    page.on("pageerror", (e) => console.error(`[${name} page error] ${e.message}`));
    await within(`${name}'s page to load`, page.goto(`${env.H2CHAT_URL}/?room=web&name=${name}`));
    await joined(page, name);
    return page;
  };
  const ana = await open("ana");
  const bob = await open("bob");
  term = terminal("term");
  await term.expect("its join", (l) => l.includes("term") && l.includes("joined"));

  // Two pages see each other's messages, in the same order.
  await say(ana, "hello from ana");
  await waitText(bob, "bob", "hello from ana");
  await say(bob, "hello from bob");
  await waitText(ana, "ana", "hello from bob");
  const seenByAna = (await messages(ana)).map((m) => m.text);
  const seenByBob = (await messages(bob)).map((m) => m.text);
  if (JSON.stringify(seenByAna) !== JSON.stringify(seenByBob)) fail(`orders differ: ${seenByAna} / ${seenByBob}`);
  if (JSON.stringify(seenByAna) !== JSON.stringify(["hello from ana", "hello from bob"])) fail(`ana saw ${seenByAna}`);

  // The terminal sees the browsers' posts, and the browsers see the terminal's.
  await term.expect("ana's post", (l) => l.includes("ana") && l.includes("hello from ana"));
  await term.expect("bob's post", (l) => l.includes("bob") && l.includes("hello from bob"));
  term.send("hello from the terminal");
  await waitText(ana, "ana", "hello from the terminal");
  await waitText(bob, "bob", "hello from the terminal");

  // Markup from a member is text.
  await say(bob, XSS);
  await waitText(ana, "ana", XSS);
  await term.expect("the markup as text", (l) => l.includes("<img src=x"));
  if ((await ana.$$("#log img")).length !== 0) fail("a member's text became an <img>");

  // A reload resumes: everything once, in order, and live traffic continues.
  const before = await messages(ana);
  await within("ana's reload", ana.reload());
  await joined(ana, "ana after reload");
  await say(bob, "after the reload");
  await waitText(ana, "ana", "after the reload");
  const after = await messages(ana);
  const seqs = after.map((m) => m.seq);
  if (new Set(seqs).size !== seqs.length) fail(`duplicates after reload: ${JSON.stringify(after)}`);
  const expected = [...before.map((m) => m.text), "after the reload"];
  if (JSON.stringify(after.map((m) => m.text)) !== JSON.stringify(expected)) {
    fail(`after reload ana shows ${JSON.stringify(after)}, expected ${JSON.stringify(expected)}`);
  }
  await term.expect("bob's post after the reload", (l) => l.includes("after the reload"));

  if (alerts.length !== 0) fail(`a page ran script from a message: ${alerts}`);
  await ana.screenshot({ path: env.H2CHAT_SCREENSHOT });
  console.log("browser test passed");
} catch (e) {
  fail(e.stack ?? String(e));
} finally {
  term?.child.kill();
  await context.close();
}
