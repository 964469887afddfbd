// Drives the dashboard in Debian's headless Chromium (run by tests/test_dashboard_browser.py).
//
// node dashboard_check.mjs PLAN_JSON
// PLAN_JSON: {url, token, userDataDir, screenshot, expect: [{queue, pending, delayed, failed}],
//             batch: {id, total, pending} (optional), retryId, workQueue, doneAtLeast, timeoutMs}
// Prints one JSON line of what it saw; exits non-zero (with the reason) when a step fails.
import { chromium } from "playwright-core";

const plan = JSON.parse(process.argv[2]);
const timeout = plan.timeoutMs ?? 30000;
const seen = { counts: {}, steps: [] };

const context = await chromium.launchPersistentContext(plan.userDataDir, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
  ],
  viewport: { width: 1280, height: 900 },
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(timeout);
  await page.goto(plan.url);
  for (const want of plan.expect) {
    const row = page.locator(`#queues tr[data-queue="${want.queue}"]`);
    for (const state of ["pending", "delayed", "failed"]) {
      if (want[state] === undefined) continue;
      const cellClass = state === "failed" ? "failed-count" : state;
      await row.locator(`td.${cellClass}`).filter({ hasText: new RegExp(`^${want[state]}$`) })
        .waitFor();
      seen.counts[`${want.queue}:${state}`] = Number(await row.locator(`td.${cellClass}`).textContent());
    }
  }
  seen.steps.push("counts");

  if (plan.batch) {
    const batchRow = page.locator(`#batches tr[data-id="${plan.batch.id}"]`);
    await batchRow.locator("td.pending").filter({ hasText: new RegExp(`^${plan.batch.pending}$`) })
      .waitFor();
    seen.batch = {
      total: Number(await batchRow.locator("td.total").textContent()),
      pending: Number(await batchRow.locator("td.pending").textContent()),
    };
    seen.steps.push("batch");
  }

  const failedRow = page.locator(`#failed tr[data-id="${plan.retryId}"]`);
  await failedRow.waitFor();
  seen.exception = await failedRow.locator("td.exception").textContent();
  seen.retryDisabledWithoutToken = await failedRow.locator("button.retry").isDisabled();

  await failedRow.locator("button.show").click();
  await page.locator("#failed-detail").filter({ hasText: "Traceback" }).waitFor();
  seen.steps.push("show");

  await page.fill("#token", plan.token);
  await page.click("#token-form button[type=submit]");
  await failedRow.locator("button.retry:not([disabled])").click();
  await page.locator("#action-result").filter({ hasText: "retried" }).waitFor();
  seen.actionResult = await page.locator("#action-result").textContent();
  await failedRow.waitFor({ state: "detached" });
  seen.steps.push("retried");

  // The worker runs the retried job: its row's "Jobs done" grows (reported every 2 s).
  await page.waitForFunction(
    ([queue, atLeast]) => [...document.querySelectorAll("#workers tbody tr")].some((tr) =>
      tr.cells.length > 6 && tr.cells[4].textContent.includes(queue)
        && Number(tr.cells[6].textContent) >= atLeast),
    [plan.workQueue, plan.doneAtLeast],
    { timeout },
  );
  seen.steps.push("ran");
  await page.screenshot({ path: plan.screenshot, fullPage: true });
  console.log(JSON.stringify(seen));
} catch (error) {
  console.log(JSON.stringify(seen));
  console.error(String(error));
  process.exitCode = 1;
} finally {
  await context.close();
}
