"""Write the application's OpenAPI document: ``python -m tests.api_baseline.openapi_dump``.

``tests/test_architecture.py`` compares the live document with the committed snapshot
(``openapi.json``); an intended change of the API is committed by running this again.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from gmp_mes import create_app

SNAPSHOT = Path(__file__).with_name("openapi.json")


def openapi_document() -> dict[str, Any]:
    folder = tempfile.mkdtemp()
    app = create_app({"database_url": f"sqlite:///{folder}/openapi.db",
                      "instance_path": folder, "secret_key": "x" * 32,
                      "signing_key": f"{folder}/signing.pem"})
    with app.test_request_context():
        return comparable(app.extensions["flask-smorest"]["apis"][""]["ext_obj"].spec.to_dict())


def comparable(document: dict[str, Any]) -> dict[str, Any]:
    """The document as JSON with its tags in name order: the order of the tag groups
    follows the order domains register in, which is not part of the contract."""
    document = json.loads(json.dumps(document, sort_keys=True))
    document["tags"] = sorted(document.get("tags", []), key=lambda tag: tag["name"])
    return document


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else SNAPSHOT
    document = openapi_document()
    target.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    print(f"{target}: {len(document['paths'])} paths")


if __name__ == "__main__":
    main()
