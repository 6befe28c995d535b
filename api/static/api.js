// Calls to the API with the key from this tab's sessionStorage, sent only as the Authorization header.

const KEY_NAME = "bulklicense.apiKey";

export const session = {
  key: () => sessionStorage.getItem(KEY_NAME),
  signIn: (key) => sessionStorage.setItem(KEY_NAME, key),
  signOut: () => sessionStorage.removeItem(KEY_NAME),
};

/** What to do when the API stops accepting the key (set by the console: sign out). */
export const hooks = { keyRefused: () => {} };

/** A fetch() of an API path with the key as a Bearer token; never puts the key in a URL. */
export async function call(path, { method = "GET", body, headers = {}, signal } = {}) {
  const key = session.key();
  const all = { ...headers };
  if (key) all.Authorization = `Bearer ${key}`;
  const response = await fetch(path, { method, body, headers: all, signal, credentials: "omit", cache: "no-store" });
  if (response.status === 401 && key) hooks.keyRefused();
  return response;
}

/** The response's JSON, or null when the body is not JSON. */
export async function jsonOf(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

/** A call whose JSON answer is wanted: `{ok, status, data}`; network failures come back as status 0. */
export async function callJson(path, options) {
  let response;
  try {
    response = await call(path, options);
  } catch (error) {
    return { ok: false, status: 0, data: { detail: `the API could not be reached (${error.message})` } };
  }
  return { ok: response.ok, status: response.status, data: await jsonOf(response) };
}

/** The refusal's one-line explanation from the API's error body. */
export function detailOf(result) {
  const detail = result.data && result.data.detail;
  if (typeof detail === "string" && detail) return detail;
  return `the API answered ${result.status}`;
}

/** Fetches a file with the key, then hands it to the browser as a download (links cannot carry the header). */
export async function download(path, filename) {
  const response = await call(path);
  if (!response.ok) {
    return { ok: false, status: response.status, data: await jsonOf(response) };
  }
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 30_000);
  return { ok: true, status: response.status, data: null };
}
