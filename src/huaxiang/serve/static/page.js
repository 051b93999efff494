// huaxiang's pages work without this script; with it, the user finder suggests ids as you type.
(function () {
  "use strict";
  var input = document.getElementById("find-user");
  var list = document.getElementById("user-suggestions");
  if (!input || !list) { return; }
  var timer = null, asked = "";
  function suggest() {
    var q = input.value.trim();
    if (q.length < 2 || q === asked) { return; }
    asked = q;
    fetch("/ui/users.json?q=" + encodeURIComponent(q), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : []; })
      .then(function (ids) {
        if (q !== input.value.trim()) { return; }
        list.replaceChildren.apply(list, ids.map(function (id) {
          var o = document.createElement("option"); o.value = id; return o;
        }));
      })
      .catch(function () { /* suggestions are a convenience: the form still works */ });
  }
  input.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(suggest, 150); });
}());
