"""Sequences that follow the schema's OpenAPI links, with every check on.

POST /api/v1/users links to reading, changing and deleting that user; POST
/api/v1/api-keys and its rotation link to rotating and revoking that key. The
state machine chains them (create, patch, delete, read the deleted...), so
checks such as use_after_free and ensure_resource_availability see the
resources the run itself made. The run acts as its own admin, whom no link and
no generated id can target (fuzzing.Credentials).
"""

from __future__ import annotations

from typing import Any

import hypothesis
from hypothesis import reject
from schemathesis import Case, Response
from schemathesis.generation.stateful import run_state_machine_as_test

from reviewpoint.config import Settings
from reviewpoint.main import create_app
from tests.contract.fuzzing import (
    CURRENT_APP,
    EXAMPLES,
    FUZZ_SETTINGS,
    SCHEMA,
    fuzz_settings,
    make_credentials,
    targets_admin,
)

STEPS = 8


def test_linked_operations_keep_their_promises(settings: Settings) -> None:
    credentials = make_credentials(settings)
    admin = credentials.admin

    class AdminScenarios(SCHEMA.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Case) -> None:
            if targets_admin(case.path_parameters, credentials.admin_id):
                reject()

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"headers": admin}

        def validate_response(
            self, response: Response, case: Case, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            # Named as the caller's headers, so ignored_auth knows they were sent on purpose.
            case.validate_response(
                response,
                headers=admin,
                additional_checks=additional_checks,
                transport_kwargs=kwargs,
                recorder=self.recorder,
            )

    with CURRENT_APP.serving(create_app(fuzz_settings(settings))):
        run_state_machine_as_test(
            AdminScenarios,
            settings=hypothesis.settings(
                FUZZ_SETTINGS, max_examples=EXAMPLES, stateful_step_count=STEPS
            ),
        )
