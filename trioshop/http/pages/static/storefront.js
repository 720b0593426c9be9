// The storefront: talks to the public API only (products, carts, orders). No framework.
"use strict";

(() => {
  const API = document.querySelector('meta[name="trioshop-api"]').content;
  const CURRENCY = document.querySelector('meta[name="trioshop-currency"]').content;
  const USER_PATTERN = /^[A-Za-z0-9_.@-]{1,64}$/;
  const SUGGESTED_USERS = ["alice", "bob", "carol"];
  const RETRIES = 3; // attempts for a 503 (busy) or a lost connection, honouring Retry-After
  const ORDER_POLL_MS = 1000; // while an order's services are pending
  const ORDER_POLL_LIMIT = 180;
  const PRODUCT_POLL_MS = 5000; // live stock, while the page is visible
  const SERVICE_NAMES = { delivery: "Delivery", notifier: "Confirmation email" };
  const DONE = new Set(["dispatched", "sent", "delivered", "done", "ok"]);

  const $ = (id) => document.getElementById(id);
  const { el } = window.trioshopDom; // dom.js
  const money = new Intl.NumberFormat(undefined, { style: "currency", currency: CURRENCY });
  const state = { user: "", products: [], cart: null, orders: [], orderPolls: 0, orderTimer: 0, productTimer: 0 };

  // -- helpers ------------------------------------------------------------------------------

  function newKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes); // works on plain http too, unlike crypto.randomUUID
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const titleOf = (sku) => (state.products.find((p) => p.sku === sku) || { title: sku }).title;

  class Problem extends Error {
    constructor(status, message, retryAfter) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
    }
  }

  async function call(method, path, { body, key } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (key) headers["Idempotency-Key"] = key;
    const token = $("token").value.trim();
    if (token) headers.Authorization = `Bearer ${token}`;
    let response;
    try {
      response = await fetch(API + path, {
        method, headers, cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      throw new Problem(0, "The shop cannot be reached.", null);
    }
    const node = response.headers.get("X-Served-By");
    if (node) $("served-by").textContent = `Served by ${node}`;
    if (response.status === 204) return null;
    let data = null;
    try { data = await response.json(); } catch (error) { data = null; }
    if (!response.ok) {
      const message = (data && data.error) || response.statusText || "Unexpected answer";
      throw new Problem(response.status, message, response.headers.get("Retry-After"));
    }
    return data;
  }

  // Retries what a person would retry: a busy shop (503) or a dropped connection, waiting as
  // the server asks; a timed-out change (504) once, with the same Idempotency-Key, so that
  // nothing is ever done twice.
  async function patiently(what, attempt) {
    for (let n = 1; ; n++) {
      try {
        const result = await attempt();
        if (n > 1) notice("");
        return result;
      } catch (error) {
        const busy = error.status === 503 || error.status === 0;
        const slow = error.status === 504 && n === 1;
        if (!(error instanceof Problem) || !(busy || slow) || n >= RETRIES) throw error;
        const wait = Math.min(10, Math.max(1, Number(error.retryAfter) || 1));
        notice(error.status === 0
          ? `Lost the connection while ${what}; trying again in ${wait} s…`
          : `The shop is busy; trying again in ${wait} s (attempt ${n + 1} of ${RETRIES})…`);
        await sleep(wait * 1000);
      }
    }
  }

  // -- messages -----------------------------------------------------------------------------

  function notice(text, ok = false) {
    const box = $("notice");
    box.textContent = text;
    box.classList.toggle("ok", ok);
  }

  let retryAction = null;
  function problem(text, retry = null) {
    notice("");
    $("problem-text").textContent = text;
    retryAction = retry;
    $("problem-retry").hidden = retry === null;
    $("problem").hidden = false;
  }
  function clearProblem() {
    $("problem").hidden = true;
    retryAction = null;
  }

  // A refusal in words a shopper understands, from the API's status and message.
  function explain(error, doing) {
    const message = error.message || "";
    const stock = /^Insufficient stock for (.+): requested (\d+), available (\d+)$/.exec(message);
    switch (error.status) {
      case 0:
        return "The shop cannot be reached right now. Check your connection and try again.";
      case 409:
        if (stock) {
          const [, sku, requested, available] = stock;
          const name = titleOf(sku);
          if (Number(available) === 0) return `Sorry, ${name} is out of stock.`;
          const left = `Only ${available} × ${name} ${Number(available) === 1 ? "is" : "are"} left`;
          return doing === "checkout"
            ? `${left}, and your cart holds ${requested}. Stock ran out meanwhile: lower the quantity, then check out again. Your cart was not changed.`
            : `${left}: your cart would hold ${requested}. Choose a smaller quantity.`;
        }
        return message;
      case 400:
        if (/empty|no active cart/i.test(message)) return "Your cart is empty: add something first.";
        if (/user_id/i.test(message)) return "That user id cannot be used: use 1 to 64 letters, digits, or _ . @ -";
        return message;
      case 401:
        $("token-box").open = true;
        return `This shop needs a sign-in token for ${state.user}: paste it under “Sign-in token”.`;
      case 403:
        $("token-box").open = true;
        return `The sign-in token given belongs to another user than ${state.user}.`;
      case 404:
        if (doing === "remove") return "That item was no longer in the cart.";
        if (doing === "add") return "That product is no longer sold.";
        return message;
      case 503:
        return "The shop is very busy right now and could not take this. Nothing was changed: please try again in a moment.";
      case 504:
        return /nothing was changed/.test(message)
          ? "The shop took too long to answer, and nothing was changed. Please try again."
          : "The shop took too long to answer. Try again: it is safe, nothing will happen twice.";
      default:
        return message || "Something went wrong. Please try again.";
    }
  }

  // -- user ---------------------------------------------------------------------------------

  function knownUsers() {
    try { return JSON.parse(localStorage.getItem("trioshop.users") || "[]"); } catch (e) { return []; }
  }

  function remember(user) {
    const users = [user, ...knownUsers().filter((u) => u !== user)].slice(0, 10);
    try {
      localStorage.setItem("trioshop.users", JSON.stringify(users));
      localStorage.setItem("trioshop.user", user);
    } catch (e) { /* private mode: nothing to keep */ }
    const list = $("known-users");
    list.replaceChildren(...[...new Set([...users, ...SUGGESTED_USERS])].map((u) => el("option", { value: u })));
  }

  async function switchUser(user) {
    state.user = user;
    state.cart = null;
    state.orders = [];
    $("user-id").value = user;
    $("cart-user").textContent = user;
    const url = new URL(location.href);
    url.searchParams.set("user", user);
    history.replaceState(null, "", url);
    remember(user);
    clearProblem();
    notice("");
    renderCart();
    renderOrders();
    await Promise.all([loadCart(), loadOrders()]);
  }

  // -- products -----------------------------------------------------------------------------

  async function loadProducts() {
    try {
      const data = await call("GET", "/products");
      state.products = data.products;
      renderProducts();
      $("products-status").textContent = "";
    } catch (error) {
      if (!state.products.length) $("products-status").textContent = "The catalog could not be loaded; retrying…";
    }
  }

  function stockText(stock) {
    if (stock <= 0) return ["Out of stock", "none"];
    if (stock <= 5) return [`Only ${stock} left`, "low"];
    return [`${stock} in stock`, ""];
  }

  function renderProducts() {
    const list = $("product-list");
    const existing = new Map([...list.children].map((li) => [li.dataset.sku, li]));
    const seen = new Set();
    state.products.forEach((product, index) => {
      seen.add(product.sku);
      let li = existing.get(product.sku);
      if (!li) {
        li = buildProduct(index);
        li.dataset.sku = product.sku;
      }
      updateProduct(li, product);
      list.append(li); // keeps registry order; moving a node keeps its input's value and focus
    });
    for (const [sku, li] of existing) if (!seen.has(sku)) li.remove();
  }

  function buildProduct(index) {
    const qtyId = `qty-${index}-${Math.random().toString(36).slice(2, 7)}`;
    const input = el("input", { id: qtyId, type: "number", min: 1, max: 1000, value: 1, required: true, inputMode: "numeric", name: "quantity" });
    const form = el("form", { class: "add" },
      el("label", { for: qtyId }, "Quantity", el("span", { class: "visually-hidden product-name" })),
      input,
      el("button", { type: "submit", class: "primary" }, "Add to cart"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      addToCart(form.closest("li").dataset.sku, Number(input.value), form.querySelector("button"));
    });
    return el("li", { class: "product" },
      el("h3", { class: "title" }), el("p", { class: "sku" }), el("p", { class: "price" }),
      el("p", { class: "stock" }), form);
  }

  function updateProduct(li, product) {
    li.querySelector(".title").textContent = product.title;
    li.querySelector(".sku").textContent = product.sku;
    li.querySelector(".price").textContent = money.format(product.price);
    const [text, level] = stockText(product.stock);
    const stock = li.querySelector(".stock");
    stock.textContent = text;
    stock.className = `stock ${level}`;
    li.querySelector(".product-name").textContent = ` of ${product.title}`;
    const input = li.querySelector("input");
    input.max = Math.max(1, Math.min(1000, product.stock));
    const button = li.querySelector("button");
    allow(button, product.stock > 0);
    button.setAttribute("aria-label", `Add ${product.title} to the cart`);
  }

  function scheduleProducts() {
    clearTimeout(state.productTimer);
    state.productTimer = setTimeout(async () => {
      if (document.visibilityState === "visible") await loadProducts();
      scheduleProducts();
    }, PRODUCT_POLL_MS);
  }

  // -- cart ---------------------------------------------------------------------------------

  async function loadCart() {
    const user = state.user;
    try {
      const cart = await call("GET", `/cart/${encodeURIComponent(user)}`);
      if (user === state.user) {
        state.cart = cart;
        renderCart();
      }
    } catch (error) {
      if (user === state.user) problem(explain(error, "view"), loadCart);
    }
  }

  function renderCart() {
    const items = (state.cart && state.cart.items) || [];
    $("cart-empty").hidden = items.length > 0;
    $("cart-table").hidden = items.length === 0;
    allow($("checkout"), items.length > 0);
    $("cart-lines").replaceChildren(...items.map((item) => {
      const remove = el("button", { type: "button", class: "link", "aria-label": `Remove ${item.title} from the cart` }, "Remove");
      remove.addEventListener("click", () => removeLine(item.sku, remove));
      return el("tr", { "data-sku": item.sku },
        el("td", {}, item.title, el("div", { class: "muted", text: `${money.format(item.price)} each` })),
        el("td", { class: "num", text: String(item.quantity) }),
        el("td", { class: "num", text: money.format(item.price * item.quantity) }),
        el("td", { class: "num" }, remove));
    }));
    $("cart-total").textContent = money.format((state.cart && state.cart.total) || 0);
  }

  // Whether *button* can be used (an item in stock, a cart with lines); while busy it is
  // disabled whatever this says, and afterwards it follows what this said last.
  function allow(button, usable) {
    button.dataset.usable = usable ? "yes" : "no";
    button.disabled = !usable || button.dataset.busy === "yes";
  }

  async function busy(button, work) {
    if (!button) return work();
    button.dataset.busy = "yes";
    button.disabled = true;
    try {
      return await work();
    } finally {
      button.dataset.busy = "no";
      button.disabled = button.dataset.usable === "no";
    }
  }

  async function addToCart(sku, quantity, button) {
    if (!Number.isInteger(quantity) || quantity < 1) return;
    const user = state.user;
    const key = newKey(); // the same key for every retry of this one add
    const run = () => busy(button, async () => {
      clearProblem();
      try {
        await patiently("adding", () => call("POST", `/cart/${encodeURIComponent(user)}/items`, { body: { sku, quantity }, key }));
        notice(`Added ${quantity} × ${titleOf(sku)} to the cart.`, true);
      } catch (error) {
        problem(explain(error, "add"), error.status === 503 || error.status === 504 || error.status === 0 ? run : null);
      }
      await Promise.all([loadCart(), loadProducts()]);
    });
    await run();
  }

  async function removeLine(sku, button) {
    const user = state.user;
    await busy(button, async () => {
      clearProblem();
      try {
        const cart = await patiently("removing", () => call("DELETE", `/cart/${encodeURIComponent(user)}/items/${encodeURIComponent(sku)}`));
        if (user === state.user) { state.cart = cart; renderCart(); }
        notice(`Removed ${titleOf(sku)} from the cart.`, true);
      } catch (error) {
        if (error.status !== 404) problem(explain(error, "remove"));
        await loadCart();
      }
    });
  }

  async function checkout() {
    const user = state.user;
    const key = newKey();
    const run = () => busy($("checkout"), async () => {
      clearProblem();
      try {
        const answer = await patiently("checking out", () => call("POST", `/cart/${encodeURIComponent(user)}/checkout`, { key }));
        const order = answer.order;
        notice(`Thank you! Order ${order.order_id.slice(0, 8)} is placed: ${money.format(order.total)}.`, true);
      } catch (error) {
        problem(explain(error, "checkout"), error.status === 503 || error.status === 504 || error.status === 0 ? run : null);
      }
      await Promise.all([loadCart(), loadProducts(), loadOrders()]);
    });
    await run();
  }

  // -- orders -------------------------------------------------------------------------------

  async function loadOrders() {
    const user = state.user;
    try {
      const data = await call("GET", `/users/${encodeURIComponent(user)}/orders`);
      if (user !== state.user) return;
      state.orders = data.orders;
      renderOrders();
    } catch (error) {
      return; // the cart's own message says enough; the next poll tries again
    }
    const pending = state.orders.some((o) => Object.values(o.services).some((s) => s.status === "pending"));
    clearTimeout(state.orderTimer);
    if (pending && state.orderPolls < ORDER_POLL_LIMIT) {
      state.orderPolls += 1;
      state.orderTimer = setTimeout(loadOrders, ORDER_POLL_MS);
    } else {
      state.orderPolls = 0;
    }
  }

  function renderOrders() {
    $("orders-empty").hidden = state.orders.length > 0;
    $("order-list").replaceChildren(...state.orders.map((order) => {
      const when = new Date(order.timestamp * 1000);
      const items = order.items.map((i) => `${i.quantity} × ${i.title}`).join(", ");
      const statuses = Object.entries(order.services).map(([name, outcome]) => {
        const done = DONE.has(outcome.status);
        const kind = outcome.status === "pending" ? "pending" : done ? "done" : "bad";
        return el("li", { class: `badge ${kind}`, "data-service": name },
          `${SERVICE_NAMES[name] || name}: `, el("strong", { text: outcome.status }));
      });
      return el("li", { class: "order", "data-order": order.order_id },
        el("div", { class: "order-head" },
          el("strong", { text: `Order ${order.order_id.slice(0, 8)}` }),
          el("time", { dateTime: when.toISOString(), text: when.toLocaleString() }),
          el("span", { class: "total", text: money.format(order.total) })),
        el("p", { class: "items", text: items }),
        el("ul", { class: "statuses", "aria-label": "Processing" }, ...statuses));
    }));
  }

  // -- start --------------------------------------------------------------------------------

  function start() {
    $("user-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const user = $("user-id").value.trim();
      if (!USER_PATTERN.test(user)) {
        problem("That user id cannot be used: use 1 to 64 letters, digits, or _ . @ -");
        return;
      }
      switchUser(user);
    });
    $("checkout").addEventListener("click", checkout);
    $("problem-close").addEventListener("click", clearProblem);
    $("problem-retry").addEventListener("click", () => { if (retryAction) retryAction(); });
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") { loadProducts(); loadCart(); loadOrders(); }
    });
    const asked = new URL(location.href).searchParams.get("user");
    let first = asked && USER_PATTERN.test(asked) ? asked : null;
    if (!first) {
      try { first = localStorage.getItem("trioshop.user"); } catch (e) { first = null; }
    }
    if (!first || !USER_PATTERN.test(first)) first = SUGGESTED_USERS[0];
    loadProducts().then(scheduleProducts);
    switchUser(first);
  }

  start();
})();
