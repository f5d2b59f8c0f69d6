// The page around auth.js (the README's "Browser apps" example): buttons, and what each
// call answered. Tokens are shown shortened, never in full.
import * as auth from "./auth.js";

const element = (id) => document.getElementById(id);
const show = (id, value) => {
  element(id).textContent = typeof value === "string" ? value : JSON.stringify(value, null, 2);
};
const shortened = (body) => Object.fromEntries(Object.entries(body).map(([name, value]) =>
  [name, typeof value === "string" && value.length > 24 ? `${value.slice(0, 12)}…` : value]));

function failed(status, error) {
  show("status", status);
  show("error", error.message);
}

async function signedIn(tokens) {
  if (tokens) show("tokens", shortened(tokens));
  const me = await auth.userinfo();
  show("userinfo", me);
  show("status", `Signed in as ${me.preferred_username}`);
  show("error", "");
}

auth.configure(await (await fetch("config.json")).json());

element("sign-in").addEventListener("click", () => auth.signIn());
element("refresh").addEventListener("click", async () => {
  try {
    show("tokens", shortened(await auth.refresh()));
    show("status", "Refreshed");
    show("error", "");
  } catch (error) {
    failed("Refresh failed", error);
  }
});
element("who-am-i").addEventListener("click", async () => {
  try {
    await signedIn(null);
  } catch (error) {
    failed("Signed out", error);
  }
});
element("sign-out").addEventListener("click", async () => {
  try {
    await auth.signOut();
    show("tokens", "");
    show("userinfo", "");
    show("status", "Signed out");
    show("error", "");
  } catch (error) {
    failed("Sign-out failed", error);
  }
});

// On load: back from the authorization server with a code, or still signed in through the
// cookie (a refresh answers), or signed out.
try {
  const tokens = await auth.completeSignIn();
  await signedIn(tokens ?? await auth.refresh());
} catch (error) {
  failed("Signed out", error);
}
