// A small "browser" for tests without one: fetch with a cookie jar and redirects followed by
// hand (each hop is visible), plus the walk through oidc-provider's built-in login and consent
// pages. Every request is bounded in time.

const WAIT = 10_000;

/**
 * A user agent with its own cookies. Cookies follow the browser rules that matter here: keyed by
 * host (not port, as in browsers) + path + name, sent on a path-prefix match, Max-Age/Expires
 * honoured (0 or past: deleted). Attributes are kept for inspection (`cookie(name)`).
 */
export class Agent {
  constructor(name = 'agent') {
    this.name = name;
    this.jar = new Map(); // `${host}|${path}|${name}` -> { name, value, host, path, attrs, expires }
  }

  /** One request, no redirect followed: { status, location, headers, text, url, setCookies }. */
  async request(url, { method = 'GET', headers = {}, body, ms = WAIT } = {}) {
    const u = new URL(url);
    const cookie = this.cookieHeader(u);
    const resp = await fetch(u, {
      method, body, redirect: 'manual', signal: AbortSignal.timeout(ms),
      headers: { ...(cookie ? { cookie } : {}), ...headers },
    });
    const setCookies = resp.headers.getSetCookie();
    for (const line of setCookies) this.store(u, line);
    const text = await resp.text();
    const location = resp.headers.get('location');
    return {
      status: resp.status, headers: resp.headers, text, url: u.href, setCookies,
      location: location ? new URL(location, u).href : null,
      json() { return JSON.parse(text); },
    };
  }

  get(url, options = {}) {
    return this.request(url, options);
  }

  postForm(url, fields, options = {}) {
    return this.request(url, {
      ...options, method: 'POST', body: new URLSearchParams(fields).toString(),
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...(options.headers || {}) },
    });
  }

  postJson(url, value, options = {}) {
    return this.request(url, {
      ...options, method: 'POST', body: JSON.stringify(value),
      headers: { 'content-type': 'application/json', ...(options.headers || {}) },
    });
  }

  /** Follows redirects from `url` until `stop(url)` is true or an answer is not a redirect. */
  async follow(url, { stop = () => false, max = 15 } = {}) {
    const hops = [];
    let current = url;
    for (let i = 0; i < max; i++) {
      if (stop(current)) return { stoppedAt: current, hops, last: hops.at(-1) };
      const r = await this.get(current);
      hops.push(r);
      if (![301, 302, 303, 307, 308].includes(r.status) || !r.location) return { stoppedAt: null, hops, last: r };
      current = r.location;
    }
    throw new Error(`${this.name}: more than ${max} redirects from ${url}`);
  }

  store(url, line) {
    const [pair, ...attrParts] = line.split(';');
    const eq = pair.indexOf('=');
    if (eq < 1) return;
    const name = pair.slice(0, eq).trim();
    const value = pair.slice(eq + 1).trim();
    const attrs = {};
    for (const part of attrParts) {
      const i = part.indexOf('=');
      const key = (i < 0 ? part : part.slice(0, i)).trim().toLowerCase();
      attrs[key] = i < 0 ? true : part.slice(i + 1).trim();
    }
    let path = typeof attrs.path === 'string' && attrs.path.startsWith('/') ? attrs.path : defaultPath(url);
    let expires = null;
    if (attrs['max-age'] !== undefined) expires = Date.now() + Number(attrs['max-age']) * 1000;
    else if (typeof attrs.expires === 'string') expires = Date.parse(attrs.expires);
    const key = `${url.hostname}|${path}|${name}`;
    if (expires !== null && expires <= Date.now()) {
      this.jar.delete(key);
      return;
    }
    this.jar.set(key, { name, value, host: url.hostname, path, attrs, expires });
  }

  cookieHeader(url) {
    const now = Date.now();
    const out = [];
    for (const [key, c] of this.jar) {
      if (c.expires !== null && c.expires <= now) { this.jar.delete(key); continue; }
      if (c.host !== url.hostname) continue;
      if (!(url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))) continue;
      out.push(`${c.name}=${c.value}`);
    }
    return out.join('; ');
  }

  /** The stored cookie called `name` (the first found), or undefined. */
  cookie(name) {
    return [...this.jar.values()].find((c) => c.name === name);
  }

  dropCookie(name) {
    for (const [key, c] of this.jar) if (c.name === name) this.jar.delete(key);
  }

  /** A copy with the same cookies (a second tab, or a thief who copied them). */
  clone(name = `${this.name}-copy`) {
    const a = new Agent(name);
    for (const [k, c] of this.jar) a.jar.set(k, { ...c, attrs: { ...c.attrs } });
    return a;
  }
}

function defaultPath(url) {
  const p = url.pathname;
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}

/**
 * From the provider's authorization URL, through oidc-provider's dev login page (as `login`, any
 * password) and its consent page, to the redirect back to the client. `consent: false` presses
 * "[ Cancel ]" on the consent page instead (the provider answers error=access_denied). Resolves
 * the URL the provider sent the browser back to (not requested).
 */
export async function signInAtProvider(agent, authorizeUrl, { login, consent = true, redirectPrefix } = {}) {
  const prefix = redirectPrefix || new URL(authorizeUrl).searchParams.get('redirect_uri');
  const back = (u) => u.startsWith(prefix);
  let step = await agent.follow(authorizeUrl, { stop: back });
  for (let round = 0; round < 4 && !step.stoppedAt; round++) {
    const page = step.last;
    if (page.status !== 200) throw new Error(`provider answered ${page.status} at ${page.url}: ${page.text.slice(0, 500)}`);
    const action = /<form[^>]*action="([^"]+)"[^>]*method="post"/i.exec(page.text)?.[1];
    const prompt = /name="prompt" value="(\w+)"/.exec(page.text)?.[1];
    if (!action || !prompt) throw new Error(`no login or consent form at ${page.url}: ${page.text.slice(0, 500)}`);
    const submit = new URL(action.replace(/&amp;/g, '&'), page.url).href;
    let r;
    if (prompt === 'login') {
      r = await agent.postForm(submit, { prompt: 'login', login, password: 'any password' });
    } else if (prompt === 'consent' && consent) {
      r = await agent.postForm(submit, { prompt: 'consent' });
    } else {
      const abort = /<a href="([^"]+)">\[ Cancel \]<\/a>/.exec(page.text)?.[1];
      if (!abort) throw new Error(`no Cancel link at ${page.url}`);
      r = { location: new URL(abort.replace(/&amp;/g, '&'), page.url).href };
    }
    if (!r.location) throw new Error(`provider answered ${r.status} to the ${prompt} form: ${r.text?.slice(0, 500)}`);
    step = await agent.follow(r.location, { stop: back });
  }
  if (!step.stoppedAt) throw new Error(`the provider never sent the browser back to ${prefix}`);
  return step.stoppedAt;
}
