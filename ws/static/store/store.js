/*
 * The Nudge demo store: a hard-coded catalog and an in-browser cart that report what the shopper does to Nudge
 * (Segment e-commerce event names and properties) and show the messages Nudge sends back.
 *
 * Identity: ?user=demo-abc in the page's URL, else the id remembered in localStorage, else a fresh one chosen by the
 * server. /store/session plays the shop's backend: it mints the short-lived token the websocket needs.
 */
(function () {
  "use strict";

  const USER_STORAGE_KEY = "nudge.demo.user";
  const CART_STORAGE_KEY = "nudge.demo.cart";
  const USER_ID_PATTERN = /^demo-[A-Za-z0-9_-]{1,40}$/; // what /store/session accepts

  const CATALOG = [
    { product_id: "sku-1001", name: "Trail running shoes", price: 89.0, category: "shoes",
      description: "Grippy lugs and a rock plate for muddy, rooty trails." },
    { product_id: "sku-1002", name: "Leather city sneakers", price: 74.5, category: "shoes",
      description: "Clean white leather with a cushioned cork footbed." },
    { product_id: "sku-2001", name: "Merino base layer", price: 59.0, category: "apparel",
      description: "Soft 200 g/m² merino that stays warm when it gets wet." },
    { product_id: "sku-2002", name: "Packable rain jacket", price: 129.0, category: "apparel",
      description: "Three-layer waterproof shell that folds into its own pocket." },
    { product_id: "sku-3001", name: "Insulated water bottle", price: 24.0, category: "gear",
      description: "750 ml, keeps drinks cold for 24 hours or hot for 12." },
    { product_id: "sku-3002", name: "Daypack 22 L", price: 64.0, category: "gear",
      description: "Light daypack with a hip belt, hydration sleeve and rain cover." },
    { product_id: "sku-4001", name: "Trail mix variety box", price: 18.5, category: "nutrition",
      description: "Twelve bags of nuts, seeds and dark chocolate." },
    { product_id: "sku-4002", name: "Electrolyte tablets", price: 12.0, category: "nutrition",
      description: "Sugar-free citrus tablets, 4 tubes of 20." },
  ];
  const PRODUCTS = new Map(CATALOG.map((product) => [product.product_id, product]));

  const money = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });

  function $(id) {
    return document.getElementById(id);
  }

  function storageGet(key) {
    try {
      return window.localStorage.getItem(key);
    } catch (_) {
      return null;
    }
  }

  function storageSet(key, value) {
    try {
      if (value === null) window.localStorage.removeItem(key);
      else window.localStorage.setItem(key, value);
    } catch (_) {
      /* storage unavailable: the demo still works for this page view */
    }
  }

  function randomId(prefix) {
    const bytes = new Uint8Array(6);
    window.crypto.getRandomValues(bytes);
    return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function round2(amount) {
    return Math.round(amount * 100) / 100;
  }

  // -- identity ------------------------------------------------------------------------------------------------

  const requestedUser = new URLSearchParams(window.location.search).get("user");
  if (requestedUser !== null && !USER_ID_PATTERN.test(requestedUser)) {
    console.warn("demo store: ignoring ?user=" + requestedUser + " (expected demo- and 1 to 40 of A-Z a-z 0-9 _ -)");
  }
  const userFromQuery = requestedUser !== null && USER_ID_PATTERN.test(requestedUser) ? requestedUser : null;
  const rememberedUser = storageGet(USER_STORAGE_KEY);
  let userId = userFromQuery || (rememberedUser && USER_ID_PATTERN.test(rememberedUser) ? rememberedUser : null);

  async function getToken() {
    const response = await fetch("/store/session" + (userId ? "?user=" + encodeURIComponent(userId) : ""), {
      cache: "no-store",
    });
    if (!response.ok) {
      // A remembered id the server no longer accepts would fail forever: forget it and let the server pick one.
      if (response.status === 400 && !userFromQuery) {
        userId = null;
        storageSet(USER_STORAGE_KEY, null);
      }
      throw new Error("/store/session answered HTTP " + response.status);
    }
    const session = await response.json();
    userId = session.userId;
    if (!userFromQuery) storageSet(USER_STORAGE_KEY, userId);
    $("shopper-id").textContent = userId;
    return session.token;
  }

  // -- cart ----------------------------------------------------------------------------------------------------

  // product_id -> quantity, in the order products were first added.
  let cart = new Map();
  let checkoutStarted = false;

  // The cart is kept per shopper, so a reload shows the same cart Nudge has in the shopper's profile.
  function loadCart() {
    try {
      const saved = JSON.parse(storageGet(CART_STORAGE_KEY) || "null");
      if (saved && saved.userId === userId && Array.isArray(saved.items)) {
        cart = new Map(saved.items.filter(([id, quantity]) => PRODUCTS.has(id) && quantity > 0));
      }
    } catch (_) {
      /* unreadable: start empty */
    }
  }

  function saveCart() {
    if (!userId) return;
    storageSet(CART_STORAGE_KEY, JSON.stringify({ userId: userId, items: Array.from(cart) }));
  }

  function cartLines() {
    return Array.from(cart, ([productId, quantity]) => {
      const product = PRODUCTS.get(productId);
      return {
        product_id: product.product_id,
        name: product.name,
        price: product.price,
        quantity: quantity,
        category: product.category,
      };
    });
  }

  function cartTotal() {
    return round2(cartLines().reduce((sum, line) => sum + line.price * line.quantity, 0));
  }

  // -- rendering -----------------------------------------------------------------------------------------------

  function button(label, accessibleName, action, productId, className) {
    const element = document.createElement("button");
    element.type = "button";
    element.textContent = label;
    element.setAttribute("aria-label", accessibleName);
    element.dataset.action = action;
    element.dataset.productId = productId;
    if (className) element.className = className;
    return element;
  }

  function renderCatalog() {
    const list = $("products");
    for (const product of CATALOG) {
      const card = document.createElement("li");
      card.className = "product";
      card.dataset.productId = product.product_id;
      card.dataset.category = product.category;

      const swatch = document.createElement("div");
      swatch.className = "swatch";
      swatch.setAttribute("aria-hidden", "true");
      swatch.textContent = product.category;

      const name = document.createElement("h3");
      name.textContent = product.name;
      const price = document.createElement("p");
      price.className = "price";
      price.textContent = money.format(product.price);

      const actions = document.createElement("div");
      actions.className = "actions";
      actions.append(
        button("View", "View " + product.name, "view", product.product_id),
        button("Add to cart", "Add " + product.name + " to cart", "add", product.product_id, "primary")
      );
      card.append(swatch, name, price, actions);
      list.appendChild(card);
    }
  }

  function renderCart() {
    const items = $("cart-items");
    items.replaceChildren();
    for (const line of cartLines()) {
      const item = document.createElement("li");
      item.dataset.productId = line.product_id;
      const label = document.createElement("span");
      label.className = "line";
      label.textContent = line.quantity + " × " + line.name;
      const amount = document.createElement("span");
      amount.className = "amount";
      amount.textContent = money.format(line.price * line.quantity);
      const remove = button("Remove", "Remove " + line.name + " from cart", "remove", line.product_id, "link");
      item.append(label, amount, remove);
      items.appendChild(item);
    }
    $("cart-empty").hidden = cart.size > 0;
    $("cart-total").textContent = money.format(cartTotal());
    $("checkout").disabled = cart.size === 0;
    $("checkout").hidden = checkoutStarted;
    $("place-order").hidden = !checkoutStarted;
  }

  function showProduct(product) {
    const detail = $("product-detail");
    detail.dataset.productId = product.product_id;
    detail.dataset.category = product.category;
    detail.querySelector(".swatch").textContent = product.category;
    $("product-detail-name").textContent = product.name;
    $("product-detail-meta").textContent = money.format(product.price) + " · " + product.category;
    $("product-detail-description").textContent = product.description;
    detail.hidden = false;
    for (const card of document.querySelectorAll(".product")) {
      card.classList.toggle("is-viewed", card.dataset.productId === product.product_id);
    }
  }

  // -- shopper actions, each reported to Nudge -----------------------------------------------------------------

  let client = null;

  function viewProduct(product) {
    showProduct(product);
    client.track("Product Viewed", {
      product_id: product.product_id,
      name: product.name,
      price: product.price,
      category: product.category,
    });
  }

  function addToCart(product) {
    cart.set(product.product_id, (cart.get(product.product_id) || 0) + 1);
    checkoutStarted = false; // a changed cart needs a new checkout
    $("order-status").textContent = "";
    saveCart();
    renderCart();
    client.track("Product Added", {
      product_id: product.product_id,
      name: product.name,
      price: product.price,
      category: product.category,
      quantity: 1,
    });
  }

  function removeFromCart(product) {
    const quantity = cart.get(product.product_id) || 0;
    if (quantity === 0) return;
    if (quantity > 1) cart.set(product.product_id, quantity - 1);
    else cart.delete(product.product_id);
    checkoutStarted = false;
    saveCart();
    renderCart();
    client.track("Product Removed", {
      product_id: product.product_id,
      name: product.name,
      price: product.price,
      quantity: 1,
    });
  }

  function startCheckout() {
    if (cart.size === 0) return;
    checkoutStarted = true;
    renderCart();
    $("place-order").focus();
    client.track("Checkout Started", { value: cartTotal(), products: cartLines() });
  }

  function placeOrder() {
    if (cart.size === 0) return;
    const orderId = randomId("ord-");
    const revenue = cartTotal();
    client.track("Order Completed", { order_id: orderId, revenue: revenue, products: cartLines() });
    cart = new Map();
    checkoutStarted = false;
    saveCart();
    renderCart();
    $("order-status").textContent = "Thank you! Order " + orderId + " is on its way.";
  }

  function onClick(event) {
    const target = event.target.closest("button[data-action]");
    if (target) {
      const product = PRODUCTS.get(target.dataset.productId);
      if (!product) return;
      if (target.dataset.action === "view") viewProduct(product);
      else if (target.dataset.action === "add") addToCart(product);
      else if (target.dataset.action === "remove") removeFromCart(product);
      return;
    }
    // Clicking anywhere else on a card views it, like a product tile links to its page.
    const card = event.target.closest(".product");
    if (card) viewProduct(PRODUCTS.get(card.dataset.productId));
  }

  // -- connection status ---------------------------------------------------------------------------------------

  const STATUS_TEXT = {
    connecting: () => "Connecting…",
    open: () => "connected as " + userId,
    closed: () => "Disconnected, retrying…",
  };

  function showStatus(state) {
    const status = $("nudge-status");
    status.dataset.state = state;
    document.body.dataset.nudgeState = state;
    status.textContent = STATUS_TEXT[state]();
  }

  // -- start ---------------------------------------------------------------------------------------------------

  if (userId) $("shopper-id").textContent = userId;
  loadCart();
  renderCatalog();
  renderCart();
  document.addEventListener("click", onClick);
  $("checkout").addEventListener("click", startCheckout);
  $("place-order").addEventListener("click", placeOrder);

  client = window.Nudge.connect({
    getToken: getToken,
    onStatus: showStatus,
    onMessage: (message) => console.info("Nudge message", message.id, message.payload),
  });
  client.track("Product List Viewed", { category: "all" });

  // For tests and for poking at the demo from the console.
  window.demoStore = { client: client };
})();
