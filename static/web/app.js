// batchsite pages: a few behaviours on top of server-rendered HTML. Every page
// works without this file; it adds local times, the submit form's model ->
// endpoint choice, and the copy button. htmx does the periodic refreshes.
(function () {
  "use strict";

  var absolute = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit", timeZoneName: "short",
  });
  var short = new Intl.DateTimeFormat(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit",
  });
  var precise = new Intl.DateTimeFormat(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
  var clock = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  var clockSeconds = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  var relative = typeof Intl.RelativeTimeFormat === "function" ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null;

  function ago(date) {
    var seconds = Math.round((date.getTime() - Date.now()) / 1000);
    var abs = Math.abs(seconds);
    if (!relative) return short.format(date);
    if (abs < 60) return relative.format(seconds, "second");
    if (abs < 3600) return relative.format(Math.round(seconds / 60), "minute");
    if (abs < 86400) return relative.format(Math.round(seconds / 3600), "hour");
    return short.format(date);
  }

  // <time datetime="...Z" data-mode="datetime|seconds|relative|time">: the viewer's local
  // time in the text, the full absolute time (with zone) on hover.
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var date = new Date(el.getAttribute("datetime"));
      if (isNaN(date.getTime())) return;
      var mode = el.getAttribute("data-mode");
      el.title = absolute.format(date);
      var format = { time: clockSeconds, seconds: precise }[mode] || short;
      el.textContent = mode === "relative" ? ago(date) : format.format(date);
    });
    root.querySelectorAll("[data-clock]").forEach(function (el) {
      var date = new Date(el.getAttribute("data-clock"));
      if (!isNaN(date.getTime())) el.textContent = clock.format(date);
    });
  }

  // Submit page: the endpoints the chosen model serves; chosen for the user when only one fits.
  function submitForm(root) {
    var form = root.querySelector ? root.querySelector("#submit-form") : null;
    if (!form || form.dataset.ready) return;
    form.dataset.ready = "1";
    var data = document.getElementById("model-endpoints");
    var served = data ? JSON.parse(data.textContent) : {};
    var model = form.querySelector("#id_model");
    var endpoint = form.querySelector("#id_endpoint");
    function fit() {
      var urls = served[model.value] || null;
      var fitting = [];
      Array.prototype.forEach.call(endpoint.options, function (option) {
        var ok = !option.value || !urls || urls.indexOf(option.value) !== -1;
        option.disabled = !ok;
        option.hidden = !ok;
        if (ok && option.value) fitting.push(option.value);
      });
      if (urls && fitting.length === 1) endpoint.value = fitting[0];
      else if (endpoint.selectedOptions.length && endpoint.selectedOptions[0].disabled) endpoint.value = "";
    }
    model.addEventListener("change", fit);
    fit();

    var add = form.querySelector("#add-pair");
    if (add) {
      add.addEventListener("click", function () {
        var next = form.querySelector(".pair[hidden]");
        if (next) {
          next.hidden = false;
          next.querySelector("input").focus();
        }
        if (!form.querySelector(".pair[hidden]")) add.hidden = true;
      });
    }

    // The server enforces the limit while streaming; this only saves a long upload that would be refused.
    var file = form.querySelector("#id_file");
    var sizeError = form.querySelector("#file-size-error");
    var max = parseInt(form.dataset.maxBytes, 10);
    function checkSize() {
      var tooBig = file.files.length && max && file.files[0].size > max;
      sizeError.hidden = !tooBig;
      sizeError.textContent = tooBig ? "This file is larger than the " + Math.round(max / 1048576) + " MB the server accepts." : "";
      return !tooBig;
    }
    file.addEventListener("change", checkSize);
    form.addEventListener("submit", function (event) {
      if (!checkSize()) {
        event.preventDefault();
        return;
      }
      // The clicked button says what is happening; disabling the other keeps the
      // clicked one's name/value (action=estimate) in the posted form.
      var estimating = event.submitter && event.submitter.id === "estimate-button";
      var other = form.querySelector(estimating ? "#submit-button" : "#estimate-button");
      if (other) other.disabled = true;
      var button = estimating ? event.submitter : form.querySelector("#submit-button");
      button.textContent = estimating ? "Counting tokens…" : "Uploading and checking…";
      if (!estimating) button.disabled = true;
    });
  }

  function copyButtons(root) {
    root.querySelectorAll("[data-copy]").forEach(function (button) {
      if (button.dataset.ready) return;
      button.dataset.ready = "1";
      button.addEventListener("click", function () {
        var input = document.querySelector(button.getAttribute("data-copy"));
        input.select();
        var done = function () { button.textContent = "Copied"; };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(input.value).then(done, function () { document.execCommand("copy"); done(); });
        } else {
          document.execCommand("copy");
          done();
        }
      });
    });
  }

  function enhance(root) {
    localTimes(root);
    submitForm(root);
    copyButtons(root);
  }

  document.addEventListener("DOMContentLoaded", function () { enhance(document); });
  // Content swapped in by htmx's refreshes gets the same treatment.
  document.addEventListener("htmx:load", function (event) { enhance(event.target); });
  // Relative times ("2 minutes ago") age between refreshes.
  setInterval(function () { localTimes(document); }, 15000);
})();
