/* Behaviour shared by the pages, kept out of the HTML so the Content-Security-Policy
   can refuse every inline script and handler that does not carry the page's nonce. */
document.addEventListener("change", function (event) {
  var field = event.target;
  if (field.matches && field.matches("[data-autosubmit]") && field.form) { field.form.submit(); }
});
