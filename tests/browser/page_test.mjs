// The web page in a real browser: Debian's headless Chromium driven by Playwright.
//
//   node tests/browser/page_test.mjs BASE_URL PHOTO SCREENSHOT.png
//
// Opens BASE_URL, checks the page is served with its security headers and works offline (every
// request it makes goes to BASE_URL's origin), uploads PHOTO through the file picker, waits for
// the label "Cat", checks the tree, the confidence bars and that the heatmap canvas has been
// drawn, clicks another label, switches to zh-Hans and waits for "猫", uploads a file that is not
// an image and waits for its InvalidArgument, then saves a screenshot of the labelled photo and
// checks, by decoding it in the browser, that it is not blank. Exit status 0 when all of it holds.
import { chromium } from "playwright-core";
import { writeFileSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";

const [base, photo, screenshot] = process.argv.slice(2);
if (!base || !photo || !screenshot) {
  console.error("usage: node page_test.mjs BASE_URL PHOTO SCREENSHOT.png");
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

function check(condition, message) {
  if (!condition) throw new Error(message);
}

const browser = await chromium.launch({
  executablePath,
  // Root in CI: no sandbox. The background-networking flags keep Chromium from calling home
  // (this machine's network is closed, and the page must work offline anyway).
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const origin = new URL(base).origin;
  const foreign = [];
  page.on("request", (r) => {
    const url = r.url();
    if (!url.startsWith(origin) && !url.startsWith("blob:") && !url.startsWith("data:")) foreign.push(url);
  });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));

  const response = await page.goto(base, { waitUntil: "load" });
  check(response.status() === 200, `GET / answered ${response.status()}`);
  const headers = response.headers();
  check(headers["content-type"] === "text/html; charset=utf-8", `content-type ${headers["content-type"]}`);
  check((headers["content-security-policy"] || "").includes("connect-src 'self'"), "no CSP");
  check((await page.title()) === "labeld", `title ${await page.title()}`);

  // Upload through the (hidden) file input, as the click on the drop zone does.
  await page.setInputFiles("#files", photo);
  await page.waitForSelector('.card[data-state="done"] .label[data-label="Cat"]', { timeout: 60000 });
  const tree = await page.$$eval(".card .label", (rows) => rows.map((r) => r.dataset.label));
  console.log(`   labels shown: ${tree.join(", ")}`);
  check(tree.includes("Animal"), "no Animal category in the tree");
  // Cat sits under Animal in the tree.
  const nested = await page.$eval('.label[data-label="Cat"]', (row) =>
    row.closest("ul").closest("li").querySelector(":scope > .label").dataset.label);
  check(nested === "Animal", `Cat is under ${nested}, not Animal`);
  const width = await page.$eval('.label[data-label="Cat"] .bar > span', (s) => parseFloat(s.style.width));
  check(width > 30 && width <= 100, `Cat's confidence bar is ${width}%`);
  check(await page.$eval(".swatches", (s) => s.children.length > 0), "no dominant colours");

  // The chosen label's heatmap is drawn over the photo.
  const painted = () => page.$eval(".stage canvas", (c) => {
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
    return n / (c.width * c.height);
  });
  const share = await painted();
  console.log(`   heatmap covers ${(share * 100).toFixed(1)}% of the photo`);
  check(share > 0.02, "the heatmap canvas is empty");
  await page.click('.label[data-label="Animal"]');
  const caption = await page.textContent(".caption");
  check(caption.includes("Animal"), `caption after clicking Animal: ${caption}`);
  check(await page.$eval('.label[data-label="Animal"]', (r) => r.classList.contains("chosen")), "Animal not chosen");

  await page.screenshot({ path: screenshot, fullPage: false });

  // Language switch: the same photo labelled again in Chinese.
  await page.selectOption("#language", "zh-Hans");
  await page.waitForSelector('.card[data-state="done"] .label[data-label="猫"]', { timeout: 60000 });
  check((await page.textContent("#drop strong")).includes("照片"), "the page text did not switch language");

  // Not an image: a clear error on its card, and the page goes on.
  await page.setInputFiles("#files", { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("not a photo") });
  await page.waitForSelector('.card[data-state="error"] .error[data-code="InvalidArgument"]', { timeout: 30000 });

  // The screenshot is not blank: decoded by the browser, it has many colours and real contrast.
  const { readFileSync } = await import("node:fs");
  const png = readFileSync(screenshot).toString("base64");
  const stats = await page.evaluate(async (b64) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const c = document.createElement("canvas");
    c.width = img.width; c.height = img.height;
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    const colours = new Set();
    let sum = 0, sq = 0, n = 0;
    for (let i = 0; i < d.length; i += 4 * 7) {
      colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
      const l = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
      sum += l; sq += l * l; n++;
    }
    const mean = sum / n;
    return { width: c.width, height: c.height, colours: colours.size, sd: Math.sqrt(sq / n - mean * mean) };
  }, png);
  console.log(`   screenshot ${screenshot}: ${stats.width}x${stats.height}, ${stats.colours} colours, luma sd ${stats.sd.toFixed(1)}`);
  check(stats.colours > 2000 && stats.sd > 20, "the screenshot looks blank");

  check(errors.length === 0, `errors on the page: ${errors.join("; ")}`);
  check(foreign.length === 0, `requests to other origins: ${foreign.join(", ")}`);
  console.log("   web page: all checks passed");
} finally {
  await browser.close();
}
