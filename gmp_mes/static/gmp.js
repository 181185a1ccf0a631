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
