/* Behaviour shared by the pages, kept out of the HTML so the Content-Security-Policy
   can refuse every inline script and handler that does not carry the page's nonce. */
document.addEventListener("change", function (event) {
  var field = event.target;
  if (field.matches && field.matches("[data-autosubmit]") && field.form) { field.form.submit(); }
});
/* An error summary at the top of a form takes the focus, so the first thing a person
   (and a screen reader) meets after a refused form is what to fix (issue 15). */
document.addEventListener("DOMContentLoaded", function () {
  var summary = document.querySelector("[data-focus]");
  if (summary) { summary.focus(); }
});
/* Scan fields of a step form (data-scan-next: a lot, a piece of equipment): a
   keyboard-wedge scanner ends every label with Enter, which must move to the next field
   instead of posting a half-filled step; a field that already holds a scan is selected
   when it takes the focus, so the next scan replaces it instead of being appended. */
document.addEventListener("keydown", function (event) {
  var field = event.target;
  if (event.key !== "Enter" || !field.matches || !field.matches("[data-scan-next]")) { return; }
  event.preventDefault();
  var fields = Array.prototype.slice.call(field.form.querySelectorAll("input:not([type=hidden]), select, textarea"));
  var next = fields[fields.indexOf(field) + 1];
  if (next) { next.focus(); }
});
document.addEventListener("focusin", function (event) {
  var field = event.target;
  if (field.matches && field.matches("[data-scan-next]") && field.value) { field.select(); }
});
