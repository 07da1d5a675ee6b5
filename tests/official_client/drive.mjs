// Drives a Cognigy REST API v2.0 server (here: the emulator) with Cognigy's official client,
// @cognigy/rest-api-client (pinned in package.json), through every call the product makes.
//
//   node drive.mjs --base-url http://127.0.0.1:PORT --api-key KEY --project-id ID --flow-id ID \
//       --staging-flow-id ID --locale-id ID --second-locale-id ID --flow-reference-id UUID
// (or the environment: COGNIGY_BASE_URL, COGNIGY_API_KEY, COGNIGY_PROJECT_ID, COGNIGY_FLOW_ID,
//  COGNIGY_STAGING_FLOW_ID, COGNIGY_LOCALE_ID, COGNIGY_SECOND_LOCALE_ID, COGNIGY_FLOW_REFERENCE_ID).
//
// Prints one JSON line per call on stdout: {call, ok, status?, statuses, error?, summary, notes?}
//   ok      the client completed the call AND the answer has what a consumer of that call needs
//           (the fields named in `need` below, from the client's types/index.d.ts)
//   status  HTTP status of the named method's own request (of the failing request when it failed); statuses
//           lists every request the step made (set-up calls, verifying reads and task polls included)
//   notes   fields the client's types declare that the answer lacks or types differently: the client
//           tolerates these at run time (it returns the parsed JSON as it is), so they do not fail a call
// Exits 1 when any call failed. Mutating calls use the staging flow (import, train, cancel) and put back what
// they change (the endpoint's entrypoint, the snapshot).

import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
// The client is CommonJS and calls axios' default instance: the same module instance is required here so an
// interceptor can record each request's HTTP status (the client's thrown errors carry only an error class).
const { RestAPIClient } = require("@cognigy/rest-api-client");
const axios = require("axios");

const CALL_TIMEOUT_MS = 60_000;
const TASK_WAIT_MS = 90_000;
const TASK_STATUSES = ["queued", "active", "done", "cancelling", "cancelled", "error"];
const TERMINAL = new Set(["done", "cancelled", "error"]);

// --- arguments ---------------------------------------------------------------------------------------
function args() {
  const names = {
    "base-url": "COGNIGY_BASE_URL",
    "api-key": "COGNIGY_API_KEY",
    "project-id": "COGNIGY_PROJECT_ID",
    "flow-id": "COGNIGY_FLOW_ID",
    "staging-flow-id": "COGNIGY_STAGING_FLOW_ID",
    "locale-id": "COGNIGY_LOCALE_ID",
    "second-locale-id": "COGNIGY_SECOND_LOCALE_ID",
    "flow-reference-id": "COGNIGY_FLOW_REFERENCE_ID",
  };
  const given = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const match = /^--([a-z-]+)(?:=(.*))?$/.exec(argv[i]);
    if (!match || !(match[1] in names)) throw new Error(`unknown argument ${argv[i]}`);
    given[match[1]] = match[2] ?? argv[++i];
  }
  const out = {};
  for (const [flag, env] of Object.entries(names)) {
    const value = given[flag] ?? process.env[env];
    if (!value) throw new Error(`missing --${flag} (or ${env})`);
    out[flag.replace(/-([a-z])/g, (_, c) => c.toUpperCase())] = value;
  }
  out.baseUrl = out.baseUrl.replace(/\/+$/, "");
  return out;
}

// --- shapes (from the client's types/index.d.ts) -------------------------------------------------------
const kindOf = (v) => (v === null ? "null" : Array.isArray(v) ? "array" : typeof v);

// spec: {field: "string" | "number" | "boolean" | "object" | "array" | "string|null" ...}
function mismatches(obj, spec, where) {
  if (kindOf(obj) !== "object") return [`${where}: expected an object, got ${kindOf(obj)}`];
  const found = [];
  for (const [field, kinds] of Object.entries(spec)) {
    const allowed = kinds.split("|");
    if (!(field in obj)) found.push(`${where}.${field}: missing (client type: ${kinds})`);
    else if (!allowed.includes(kindOf(obj[field])))
      found.push(`${where}.${field}: ${kindOf(obj[field])} ${JSON.stringify(obj[field])?.slice(0, 40)} (client type: ${kinds})`);
  }
  return found;
}

// Non-optional fields of the client's interfaces (types/index.d.ts), as JSON kinds. TTimestamp is `number`.
const DECLARED = {
  page: { items: "array", total: "number", nextCursor: "string", previousCursor: "string" }, // ICursorBasedPaginationReturnValue
  createdTask: { _id: "string", status: "string", type: "string", parameters: "object", lastChangedAt: "number", createdAt: "number" }, // ICreatedTask_2_0
  task: {
    // ITask_2_0 = TAbstractTaskData_2_0 ({name, data}) & {...}
    _id: "string", name: "string", data: "object", currentStep: "number", totalStep: "number", failReason: "string",
    lastRunAt: "string|null", lastFinishedAt: "string|null", status: "string", createdAt: "number",
    lastChanged: "number", createdBy: "string", lastChangedBy: "string",
  },
  flow: {
    // IFlow_2_0
    _id: "string", referenceId: "string", name: "string", context: "object", attachedFlows: "array",
    attachedLexicons: "array", localeReference: "string", intentTrainGroupReference: "string",
    feedbackReport: "object", isTrainingOutOfDate: "boolean", img: "string", createdAt: "number",
    lastChanged: "number", createdBy: "string", lastChangedBy: "string",
  },
  locale: {
    // ILocaleIndexItem_2_0
    _id: "string", referenceId: "string", name: "string", primary: "boolean", nluLanguage: "string",
    fallbackLocaleReference: "string", createdAt: "number", lastChanged: "number", createdBy: "string",
    lastChangedBy: "string",
  },
  intent: {
    // IIntentIndexItem_2_0
    _id: "string", referenceId: "string", name: "string", tags: "array", isRejectIntent: "boolean",
    isDisabled: "boolean", localeReference: "string", parentIntentId: "string", feedbackReport: "object",
  },
  endpointItem: {
    // IEndpointIndexItem_2_0 (no entrypoint, no active in the index item)
    _id: "string", channel: "string", URLToken: "string", flowId: "string", localeId: "string", name: "string",
    createdAt: "number", lastChanged: "number", createdBy: "string", lastChangedBy: "string",
    overrideSnapshotConnections: "boolean",
  },
  endpoint: {
    // IEndpoint_2_0 (the fields this project reads, plus its entity meta)
    _id: "string", channel: "string", flowId: "string", localeId: "string", URLToken: "string", name: "string",
    entrypoint: "string", active: "boolean", nluConnectorId: "string", createdAt: "number", lastChanged: "number",
    createdBy: "string", lastChangedBy: "string",
  },
  snapshotItem: {
    // ISnapshotIndexItem_2_0
    _id: "string", name: "string", description: "string", hash: "string", createdAt: "number", createdBy: "string",
    isPackaged: "boolean", packageExpiresAt: "number",
  },
  snapshot: {
    // ISnapshot_2_0
    _id: "string", name: "string", description: "string", hash: "string", createdAt: "number", createdBy: "string",
    isPackaged: "boolean",
  },
  score: {
    // IGeneratedNluScore_2_0 (openapi comment in types/index.d.ts; the TS return type is `{}`)
    id: "string", name: "string", score: "number", negated: "boolean", confirmationSentence: "string",
    confirmationSentences: "array", disambiguationSentence: "string", flow: "string",
  },
};

// --- recording -----------------------------------------------------------------------------------------
let statuses = [];
let currentMethod = null; // the client method the running step is named after
let ownIndex = null; // index in `statuses` of that method's own request
axios.interceptors.response.use(
  (response) => {
    statuses.push(response.status);
    return response;
  },
  (error) => {
    statuses.push(error?.response?.status ?? 0);
    return Promise.reject(error);
  },
);

class Failure extends Error {}
const fail = (message) => {
  throw new Failure(message);
};
const needAll = (problems) => {
  if (problems.length) fail(problems.join("; "));
};

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Failure(`${what}: no answer within ${CALL_TIMEOUT_MS / 1000}s`)), CALL_TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function describeError(err) {
  if (err instanceof Failure) return err.message;
  const name = err?.constructor?.name || err?.name || "Error";
  const details = err?.details && Object.keys(err.details).length ? ` ${JSON.stringify(err.details).slice(0, 300)}` : "";
  return `${name}: ${err?.message ?? String(err)}${details}`;
}

let failures = 0;
const results = {};

// One step = one client call (plus the reads that verify it). fn returns {summary, notes?, value?}.
async function step(call, fn, { needs = [] } = {}) {
  statuses = [];
  currentMethod = call.split(".")[0];
  ownIndex = null;
  const line = { call };
  const missing = needs.filter((dep) => !results[dep]?.ok);
  if (missing.length) {
    line.ok = false;
    line.error = `not run: needs ${missing.join(", ")}, which failed`;
    line.summary = "skipped";
  } else {
    try {
      const out = await fn();
      line.ok = true;
      line.summary = out.summary;
      if (out.notes?.length) line.notes = out.notes;
      line.value = out.value;
    } catch (err) {
      line.ok = false;
      line.error = describeError(err);
      line.summary = "failed";
    }
  }
  // the named method's own request when the step succeeded, the request that failed otherwise
  if (statuses.length) line.status = line.ok ? statuses[ownIndex ?? 0] : statuses[statuses.length - 1];
  line.statuses = statuses;
  results[call] = line;
  if (!line.ok) failures += 1;
  const { value, ...printed } = line;
  process.stdout.write(`${JSON.stringify(printed)}\n`);
  return line;
}

// --- the run -------------------------------------------------------------------------------------------
async function main() {
  const a = args();
  const client = new RestAPIClient({ baseUrl: a.baseUrl });
  client.setCredentials({ type: "ApiKey", apiKey: a.apiKey });
  const c = (method, data, what) => {
    if (method === currentMethod && ownIndex === null) ownIndex = statuses.length;
    return withTimeout(client[method](data), what || method);
  };

  async function waitTask(taskId, wanted, what) {
    const deadline = Date.now() + TASK_WAIT_MS;
    let task;
    for (;;) {
      task = await c("readTask", { taskId }, `readTask ${taskId}`);
      if (TERMINAL.has(task.status) || Date.now() > deadline) break;
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    if (task.status !== wanted)
      fail(`${what} task ${taskId} ended ${task.status} (wanted ${wanted})${task.failReason ? `: ${task.failReason}` : ""}`);
    return task;
  }

  const createdTaskChecks = (task, type, where) => {
    const problems = mismatches(task, { _id: "string", status: "string", type: "string", parameters: "object" }, where);
    if (!problems.length && !TASK_STATUSES.includes(task.status)) problems.push(`${where}.status: ${task.status} is no TTaskStatus_2_0`);
    if (!problems.length && task.type !== type) problems.push(`${where}.type: ${task.type}, wanted ${type}`);
    return problems;
  };

  // readFlow: IReadFlowRestData_2_0 {flowId, preferredLocaleId?, includeFeedbackReport?} -> IFlow_2_0
  await step("readFlow", async () => {
    const flow = await c("readFlow", { flowId: a.flowId, preferredLocaleId: a.localeId, includeFeedbackReport: true });
    needAll(mismatches(flow, { _id: "string", referenceId: "string", name: "string", isTrainingOutOfDate: "boolean", feedbackReport: "object" }, "flow"));
    needAll(mismatches(flow.feedbackReport, { info: "object", findings: "array" }, "flow.feedbackReport"));
    if (flow._id !== a.flowId) fail(`flow._id ${flow._id} != ${a.flowId}`);
    if (flow.referenceId !== a.flowReferenceId) fail(`flow.referenceId ${flow.referenceId} != ${a.flowReferenceId}`);
    return {
      summary: `flow ${flow.name} referenceId ${flow.referenceId} isTrainingOutOfDate=${flow.isTrainingOutOfDate} accuracy=${flow.feedbackReport.info?.accuracy}`,
      notes: mismatches(flow, DECLARED.flow, "IFlow_2_0"),
      value: flow,
    };
  });

  // indexLocales: IIndexLocalesRestData_2_0 {projectId, limit, ...} -> page of ILocaleIndexItem_2_0
  await step("indexLocales", async () => {
    const page = await c("indexLocales", { projectId: a.projectId, limit: 100 });
    needAll(mismatches(page, { items: "array", total: "number" }, "page"));
    for (const item of page.items) needAll(mismatches(item, { _id: "string", referenceId: "string", name: "string" }, "locale"));
    const mine = page.items.find((item) => item._id === a.localeId);
    const second = page.items.find((item) => item._id === a.secondLocaleId);
    if (!mine || !second) fail(`locales ${a.localeId} and ${a.secondLocaleId} not both listed`);
    return {
      summary: `${page.items.length} of ${page.total} locales: ${page.items.map((l) => l.name).join(", ")}`,
      notes: [...mismatches(page, DECLARED.page, "page"), ...mismatches(page.items[0], DECLARED.locale, "ILocaleIndexItem_2_0")],
      value: { locale: mine, second },
    };
  });

  // indexIntents: IIndexIntentsRestData_2_0 {flowId, preferredLocaleId?, includeFeedbackReport?, limit} -> page of IIntentIndexItem_2_0
  await step("indexIntents", async () => {
    const page = await c("indexIntents", { flowId: a.flowId, preferredLocaleId: a.localeId, includeFeedbackReport: true, limit: 100 });
    needAll(mismatches(page, { items: "array", total: "number" }, "page"));
    if (!page.items.length) fail("no intents listed");
    for (const item of page.items) {
      needAll(mismatches(item, { _id: "string", name: "string", feedbackReport: "object" }, `intent ${item.name}`));
      needAll(mismatches(item.feedbackReport, { info: "object", findings: "array" }, `intent ${item.name}.feedbackReport`));
    }
    return {
      summary: `${page.items.length} of ${page.total} intents, e.g. ${page.items[0].name} fScore=${page.items[0].feedbackReport.info.fScore}`,
      notes: [...mismatches(page, DECLARED.page, "page"), ...mismatches(page.items[0], DECLARED.intent, "IIntentIndexItem_2_0")],
    };
  });

  // exportIntents: IExportIntentsRestData_2_0 {flowId, localeId, format: "csv" | "json"} -> the file content (TS: {})
  await step("exportIntents", async () => {
    const data = await c("exportIntents", { flowId: a.stagingFlowId, localeId: a.localeId, format: "json" });
    if (!Array.isArray(data)) fail(`export answered ${kindOf(data)}, not a JSON array of intents`);
    for (const intent of data) needAll(mismatches(intent, { name: "string", exampleSentences: "array" }, "exported intent"));
    const sentences = data.reduce((n, intent) => n + intent.exampleSentences.length, 0);
    return { summary: `${data.length} intents, ${sentences} example sentences`, value: data };
  });

  // importIntents: IImportIntentsRestData_2_0 {flowId, file: Buffer, localeId, mode} (multipart; flowId in the path
  // only) -> ICreatedTask_2_0. The client names the file part `fileName` (a field it also sends) or "fake.txt".
  await step(
    "importIntents",
    async () => {
      const file = Buffer.from(JSON.stringify(results.exportIntents.value));
      const task = await c("importIntents", { flowId: a.stagingFlowId, localeId: a.localeId, mode: "overwrite", file, fileName: "intents.json" });
      needAll(createdTaskChecks(task, "importIntents", "import task"));
      const done = await waitTask(task._id, "done", "import");
      return {
        summary: `import task ${task._id} ${task.status} -> ${done.status}, parameters ${JSON.stringify(task.parameters)}`,
        notes: mismatches(task, DECLARED.createdTask, "ICreatedTask_2_0"),
        value: task,
      };
    },
    { needs: ["exportIntents"] },
  );

  // readTask: IReadTaskRestData_2_0 {taskId} -> ITask_2_0 (the type is in `name`, the parameters in `data`)
  await step(
    "readTask",
    async () => {
      const task = await c("readTask", { taskId: results.importIntents.value._id });
      needAll(mismatches(task, { _id: "string", name: "string", data: "object", status: "string", currentStep: "number", totalStep: "number" }, "task"));
      if (task.name !== "importIntents") fail(`task.name ${task.name}, wanted importIntents`);
      if (!TASK_STATUSES.includes(task.status)) fail(`task.status ${task.status} is no TTaskStatus_2_0`);
      return {
        summary: `task ${task._id} name=${task.name} status=${task.status} step ${task.currentStep}/${task.totalStep}`,
        notes: mismatches(task, DECLARED.task, "ITask_2_0"),
      };
    },
    { needs: ["importIntents"] },
  );

  // trainIntents: ITrainIntentsRestData_2_0 {flowId, localeId?, mode?} -> ICreatedTask_2_0
  await step("trainIntents", async () => {
    const task = await c("trainIntents", { flowId: a.stagingFlowId, localeId: a.localeId });
    needAll(createdTaskChecks(task, "trainIntents", "training task"));
    if (task.parameters.flowId !== a.stagingFlowId || task.parameters.localeId !== a.localeId)
      fail(`training task parameters ${JSON.stringify(task.parameters)} do not name flow ${a.stagingFlowId} / locale ${a.localeId}`);
    const done = await waitTask(task._id, "done", "training");
    return {
      summary: `training task ${task._id} ${task.status} -> ${done.status}, parameters ${JSON.stringify(task.parameters)}`,
      notes: mismatches(task, DECLARED.createdTask, "ICreatedTask_2_0"),
      value: task,
    };
  });

  // cancelTask: ICancelTaskRestData_2_0 {taskId} -> {} ; a second training (other locale) is started and cancelled
  await step("cancelTask", async () => {
    const task = await c("trainIntents", { flowId: a.stagingFlowId, localeId: a.secondLocaleId }, "trainIntents (to cancel)");
    needAll(createdTaskChecks(task, "trainIntents", "training task"));
    const answer = await c("cancelTask", { taskId: task._id });
    const after = await waitTask(task._id, "cancelled", "cancelled training");
    return { summary: `cancel answered ${JSON.stringify(answer)}; task ${task._id} -> ${after.status}` };
  });

  // indexTasks: IIndexTasksRestData_2_0 {projectId?, limit, skip, sort, next, previous, filter, query} -> page of
  // ITaskIndexItem_2_0. Read newest first in pages of 2, following the `next` cursor.
  await step("indexTasks", async () => {
    const first = await c("indexTasks", { projectId: a.projectId, limit: 2, skip: 0, sort: { createdAt: "desc" } });
    needAll(mismatches(first, { items: "array", total: "number" }, "page"));
    if (first.total < 3) fail(`only ${first.total} tasks listed after an import and two trainings`);
    if (first.items.length !== 2) fail(`limit 2 answered ${first.items.length} items`);
    if (typeof first.nextCursor !== "string") fail(`page 1 of ${first.total} has no nextCursor (${first.nextCursor})`);
    const second = await c("indexTasks", { projectId: a.projectId, limit: 2, next: first.nextCursor });
    const third = await c("indexTasks", { projectId: a.projectId, limit: 2, skip: 2, sort: { createdAt: "desc" } });
    const ids = (page) => page.items.map((t) => t._id).join(",");
    if (ids(second) !== ids(third)) fail(`next cursor gave [${ids(second)}], skip=2 gave [${ids(third)}]`);
    const items = [...first.items, ...second.items];
    for (const item of items) {
      needAll(mismatches(item, { _id: "string", name: "string", data: "object", status: "string" }, `task ${item._id}`));
      if (!TASK_STATUSES.includes(item.status)) fail(`task ${item._id} status ${item.status} is no TTaskStatus_2_0`);
    }
    const trained = results.trainIntents.value?._id;
    if (trained && !items.some((t) => t._id === trained && t.name === "trainIntents"))
      fail(`the training ${trained} is not among the newest tasks as name=trainIntents`);
    return {
      summary: `${first.total} tasks; newest: ${items.map((t) => `${t.name}:${t.status}`).join(", ")}`,
      notes: [...mismatches(first, DECLARED.page, "page"), ...mismatches(first.items[0], DECLARED.task, "ITaskIndexItem_2_0")],
    };
  });

  // indexEndpoints: IIndexEndpointsRestData_2_0 {projectId, limit, ...} -> page of IEndpointIndexItem_2_0
  await step("indexEndpoints", async () => {
    const page = await c("indexEndpoints", { projectId: a.projectId, limit: 100 });
    needAll(mismatches(page, { items: "array", total: "number" }, "page"));
    for (const item of page.items) needAll(mismatches(item, { _id: "string", name: "string", flowId: "string" }, `endpoint ${item.name}`));
    const serving = page.items.filter((e) => e.flowId === a.flowId || e.flowId === a.flowReferenceId);
    if (!serving.length) fail(`no endpoint names flow ${a.flowId} / ${a.flowReferenceId} in flowId`);
    return {
      summary: `${page.total} endpoints; serving the flow: ${serving.map((e) => `${e.name} (flowId ${e.flowId})`).join(", ")}`,
      notes: [...mismatches(page, DECLARED.page, "page"), ...mismatches(page.items[0], DECLARED.endpointItem, "IEndpointIndexItem_2_0")],
      value: serving[0],
    };
  });

  // readEndpoint: IReadEndpointRestData_2_0 {endpointId} -> IEndpoint_2_0 (entrypoint = project id or snapshot id)
  await step(
    "readEndpoint",
    async () => {
      const endpoint = await c("readEndpoint", { endpointId: results.indexEndpoints.value._id });
      needAll(mismatches(endpoint, { _id: "string", flowId: "string", localeId: "string", entrypoint: "string", URLToken: "string" }, "endpoint"));
      return {
        summary: `endpoint ${endpoint.name} entrypoint=${endpoint.entrypoint} flowId=${endpoint.flowId} localeId=${endpoint.localeId}`,
        notes: mismatches(endpoint, DECLARED.endpoint, "IEndpoint_2_0"),
        value: endpoint,
      };
    },
    { needs: ["indexEndpoints"] },
  );

  // createSnapshot: ICreateSnapshotRestData_2_0 {projectId, name, description} -> ICreatedTask_2_0 (no snapshot id)
  const snapshotName = `official-client-${Date.now()}`;
  await step("createSnapshot", async () => {
    const task = await c("createSnapshot", { projectId: a.projectId, name: snapshotName, description: "made by tests/official_client/drive.mjs" });
    needAll(createdTaskChecks(task, "createSnapshot", "snapshot task"));
    const done = await waitTask(task._id, "done", "createSnapshot");
    return {
      summary: `snapshot task ${task._id} ${task.status} -> ${done.status}, parameters ${JSON.stringify(task.parameters)}`,
      notes: mismatches(task, DECLARED.createdTask, "ICreatedTask_2_0"),
    };
  });

  // indexSnapshots: IIndexSnapshotsRestData_2_0 {projectId, limit, ...} -> page of ISnapshotIndexItem_2_0; found by name
  await step(
    "indexSnapshots",
    async () => {
      const page = await c("indexSnapshots", { projectId: a.projectId, limit: 100 });
      needAll(mismatches(page, { items: "array", total: "number" }, "page"));
      for (const item of page.items) needAll(mismatches(item, { _id: "string", name: "string" }, "snapshot"));
      const mine = page.items.find((s) => s.name === snapshotName);
      if (!mine) fail(`snapshot ${snapshotName} not listed (${page.items.map((s) => s.name).join(", ")})`);
      return {
        summary: `${page.total} snapshots; ${snapshotName} is ${mine._id}`,
        notes: [...mismatches(page, DECLARED.page, "page"), ...mismatches(mine, DECLARED.snapshotItem, "ISnapshotIndexItem_2_0")],
        value: mine,
      };
    },
    { needs: ["createSnapshot"] },
  );

  // readSnapshot: IReadSnapshotRestData_2_0 {snapshotId} -> ISnapshot_2_0
  await step(
    "readSnapshot",
    async () => {
      const snapshot = await c("readSnapshot", { snapshotId: results.indexSnapshots.value._id });
      needAll(mismatches(snapshot, { _id: "string", name: "string", hash: "string" }, "snapshot"));
      if (snapshot.name !== snapshotName) fail(`snapshot.name ${snapshot.name} != ${snapshotName}`);
      return { summary: `snapshot ${snapshot._id} ${snapshot.name} hash ${snapshot.hash}`, notes: mismatches(snapshot, DECLARED.snapshot, "ISnapshot_2_0") };
    },
    { needs: ["indexSnapshots"] },
  );

  // updateEndpoint: IUpdateEndpointRestData_2_0 {endpointId, ...Partial<IEndpoint_2_0> without entity meta and
  // URLToken} -> {} . The entrypoint goes to the new snapshot (the project id when there is none), is read back,
  // and is put back.
  await step(
    "updateEndpoint",
    async () => {
      const before = results.readEndpoint.value;
      const target = results.indexSnapshots?.ok ? results.indexSnapshots.value._id : a.projectId;
      const answer = await c("updateEndpoint", { endpointId: before._id, entrypoint: target });
      const switched = await c("readEndpoint", { endpointId: before._id }, "readEndpoint (after PATCH)");
      if (switched.entrypoint !== target) fail(`after PATCH entrypoint=${target}, read back ${switched.entrypoint}`);
      await c("updateEndpoint", { endpointId: before._id, entrypoint: before.entrypoint }, "updateEndpoint (put back)");
      const back = await c("readEndpoint", { endpointId: before._id }, "readEndpoint (after putting back)");
      if (back.entrypoint !== before.entrypoint) fail(`putting entrypoint back to ${before.entrypoint} left ${back.entrypoint}`);
      return { summary: `PATCH entrypoint ${before.entrypoint} -> ${target} (answer ${JSON.stringify(answer).slice(0, 80)}) -> back` };
    },
    { needs: ["readEndpoint"] },
  );

  // deleteSnapshot: IDeleteSnapshotRestData_2_0 {snapshotId} -> ICreatedTask_2_0
  await step(
    "deleteSnapshot",
    async () => {
      const snapshotId = results.indexSnapshots.value._id;
      const task = await c("deleteSnapshot", { snapshotId });
      needAll(createdTaskChecks(task, "deleteSnapshot", "delete task"));
      const done = await waitTask(task._id, "done", "deleteSnapshot");
      const page = await c("indexSnapshots", { projectId: a.projectId, limit: 100 }, "indexSnapshots (after delete)");
      if (page.items.some((s) => s._id === snapshotId)) fail(`snapshot ${snapshotId} still listed after its delete task is done`);
      return {
        summary: `delete task ${task._id} ${task.status} -> ${done.status}; snapshot gone`,
        notes: mismatches(task, DECLARED.createdTask, "ICreatedTask_2_0"),
      };
    },
    { needs: ["indexSnapshots"] },
  );

  // generateNluScores: IGenerateNluScoresRestData_2_0 {projectId, flowReferenceId, localeReferenceId, sentence}
  await step(
    "generateNluScores",
    async () => {
      const answer = await c("generateNluScores", {
        projectId: a.projectId,
        flowReferenceId: a.flowReferenceId,
        localeReferenceId: results.indexLocales.value.locale.referenceId,
        sentence: "I want to check my account balance",
      });
      needAll(mismatches(answer, { scores: "array" }, "answer"));
      if (!answer.scores.length) fail("no scores");
      for (const score of answer.scores) needAll(mismatches(score, { id: "string", name: "string", score: "number" }, "score"));
      const best = answer.scores.reduce((x, y) => (y.score > x.score ? y : x));
      return {
        summary: `${answer.scores.length} scores, best ${best.name}=${best.score.toFixed(3)}`,
        notes: mismatches(answer.scores[0], DECLARED.score, "IGeneratedNluScore_2_0"),
      };
    },
    { needs: ["indexLocales"] },
  );

  // An error answer decodes into the client's error class (its ErrorCollection is keyed by the body's `code`).
  await step("readTask.notFound", async () => {
    try {
      await c("readTask", { taskId: "0123456789abcdef01234567" });
    } catch (err) {
      const kind = err?.constructor?.name;
      if (kind !== "ResourceNotFoundError") fail(`an unknown task id raised ${kind} (${describeError(err)}), not ResourceNotFoundError`);
      return { summary: `unknown task id -> ${kind} (code ${err.code}): ${err.message}` };
    }
    fail("an unknown task id was answered without an error");
  });
}

main()
  .catch((err) => {
    process.stderr.write(`drive.mjs: ${err?.stack ?? err}\n`);
    failures += 1;
  })
  .finally(() => process.exit(failures ? 1 : 0));
