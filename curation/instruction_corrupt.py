"""Seeded instruction data with planted defects, built from Banking77: the checks' ground truth.

Every Banking77 query becomes a prompt; its answer comes from a few support-answer templates
filled with the intent ("card arrival") and random details. A seeded subset gets one planted
defect of each kind of schemas.instruction_params.INSTRUCTION_CHECKS; another subset becomes
*tricky clean* rows that look like defects and are not (short-but-valid answers, answers
quoting the prompt, code blocks with HTML and repeated lines, apologies that help, numbered
lists, reference numbers, "we cannot" policies). Pure: a frame and a seed in, a frame out.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from schemas.instruction_params import INSTRUCTION_CHECKS

TRICKY_KINDS = ("short_valid", "quote", "code", "apology", "list", "numbers", "policy")

_ANSWERS = (
    "Thanks for getting in touch about {topic}. You can find the steps in the app under Help, and our "
    "team replies within {hours} hours if you need more.",
    "Here is what to do about {topic}: open the app, go to {section} and follow the instructions shown "
    "there. It usually takes {minutes} minutes.",
    "I understand your question about {topic}. Please check {section} in the app first; if nothing is "
    "shown there, contact support and we will look into it within {days} business days.",
    "Good question. For {topic}, the quickest route is the {section} page in the app, where you can see "
    "the status and any next steps.",
    "Regarding {topic}, most customers sort this out in the app under {section}. If it still looks wrong "
    "after {hours} hours, message us from the Help tab.",
    "We can help with {topic}. Go to {section}, choose the option that fits, and confirm with your "
    "passcode; you will get a notification once it is done.",
)
_SECTIONS = ("Cards", "Payments", "Account settings", "Top-ups", "Transfers", "Security", "Statements")
_FOREIGN = (
    "Merci de nous avoir contactés au sujet de votre demande. Vous trouverez toutes les étapes dans "
    "l'application, rubrique Aide, et notre équipe vous répond sous {hours} heures.",
    "Gracias por escribirnos sobre su consulta. Puede encontrar los pasos en la aplicación, en la sección "
    "de Ayuda, y nuestro equipo le responderá en un plazo de {hours} horas.",
    "Vielen Dank für Ihre Nachricht zu Ihrem Anliegen. Die einzelnen Schritte finden Sie in der App unter "
    "Hilfe, und unser Team antwortet innerhalb von {hours} Stunden.",
    "Grazie per averci contattato per la sua richiesta. Trova tutti i passaggi nell'app, nella sezione "
    "Aiuto, e il nostro team risponde entro {hours} ore.",
    "Obrigado por entrar em contacto sobre o seu pedido. Pode encontrar os passos na aplicação, na secção "
    "de Ajuda, e a nossa equipa responde dentro de {hours} horas.",
)
_REFUSALS = (
    "As an AI language model, I cannot help with that.",
    "I'm sorry, but I can't assist with that request.",
    "As an AI, I don't have access to your account, so I can't help with {topic}.",
    "I am unable to help with that. Please contact your bank directly.",
    "I'm afraid I can't help with {topic}; as a language model I have no access to your account.",
)
_EMPTY = ("...", "N/A", "-", "<br>", "TODO", "?", "none", "<p></p>")
_SHORT = ("Ok", "Yes", "Sure", "Done.", "No.")
_SHORT_VALID = (
    "Yes, within {hours} hours.",
    "No, there is no fee.",
    "Usually {days} business days.",
    "Yes, in the app.",
    "Only in the app, under {section}.",
)
_IBANS = ("GB82 WEST 1234 5698 7654 32", "DE89 3704 0044 0532 0130 00", "FR14 2004 1010 0505 0001 3M02 606")


def _luhn_card(rng: np.random.Generator) -> str:
    digits = [4, *(int(d) for d in rng.integers(0, 10, size=14))]
    total = 0
    for i, d in enumerate(reversed(digits)):  # the check digit will sit at the right
        doubled = d * 2 if i % 2 == 0 else d
        total += doubled - 9 if doubled > 9 else doubled
    digits.append((10 - total % 10) % 10)
    s = "".join(map(str, digits))
    return " ".join(s[i : i + 4] for i in range(0, 16, 4))


def _fill(template: str, topic: str, rng: np.random.Generator) -> str:
    return template.format(
        topic=topic,
        section=str(rng.choice(_SECTIONS)),
        hours=int(rng.choice([2, 12, 24, 48])),
        minutes=int(rng.choice([2, 5, 10])),
        days=int(rng.choice([1, 2, 3, 5])),
    )


def _defect(kind: str, prompt: str, answer: str, topic: str, rng: np.random.Generator) -> str:
    k = int(rng.integers(1 << 30))
    if kind == "empty_response":
        return _EMPTY[k % len(_EMPTY)]
    if kind == "short_response":
        return _SHORT[k % len(_SHORT)]
    if kind == "prompt_echo":
        return (prompt, prompt.rstrip("?.! ") + "?", prompt.lower(), prompt.upper())[k % 4]
    if kind == "repetitive_response":
        first = answer.split(". ")[0].rstrip(".") + "."
        words = answer.split()
        loop = " ".join(words[:3])
        return (
            " ".join([first] * int(rng.integers(3, 7))),
            " ".join([loop] * int(rng.integers(6, 11))),
            answer + "\n" + "\n".join([first] * int(rng.integers(3, 6))),
        )[k % 3]
    if kind == "non_target_language":
        return _fill(_FOREIGN[k % len(_FOREIGN)], topic, rng)
    if kind == "template_tokens":
        return (
            f"<|im_start|>assistant\n{answer}<|im_end|>",
            f"[INST] {prompt} [/INST] {answer}",
            f"### Response:\n{answer}",
            f"{answer} Best regards, {{{{agent_name}}}}",
            f"{answer}</s>",
            f"Assistant: {answer}",
        )[k % 6]
    if kind == "markup":
        return (
            f"<p>{answer}</p>",
            f"{answer}<br/>",
            f"<b>Note:</b> {answer}",
            f"{answer}&nbsp;",
            f"<div>{answer}</div>",
        )[k % 5]
    if kind == "refusal":
        return _REFUSALS[k % len(_REFUSALS)].format(topic=topic)
    if kind == "truncated_response":
        words = answer.split()
        if k % 3 == 0:
            return answer.rstrip(".") + f" (see {rng.choice(_SECTIONS)} for details."
        if k % 3 == 1:
            return answer + " Developers can run:\n```bash\ncurl https://api.example.com/v1/cards"
        cut = int(rng.integers(int(len(words) * 0.5), int(len(words) * 0.85)))
        return " ".join(words[:cut]).rstrip(".,;:!?")
    if kind == "pii_in_response":
        return (
            f"{answer} You can also email me at anna.kowalski{k % 97}@gmail.com.",
            f"{answer} My direct line is +44 20 7946 0{k % 1000:03d}.",
            f"{answer} Your card number {_luhn_card(rng)} is now active.",
            f"{answer} Send the money to IBAN {_IBANS[k % len(_IBANS)]}.",
        )[k % 4]
    raise ValueError(f"unknown defect kind {kind!r}")


def _tricky(kind: str, prompt: str, answer: str, topic: str, rng: np.random.Generator) -> str:
    k = int(rng.integers(1 << 30))
    if kind == "short_valid":
        return _fill(_SHORT_VALID[k % len(_SHORT_VALID)], topic, rng)
    if kind == "quote":
        words = prompt.split()
        part = " ".join(words[: max(2, int(len(words) * 0.6))]).rstrip("?.!,")
        return f'You asked: "{part}". {answer}'
    if kind == "code":
        return (
            f"{answer} For developers, the same call in the API:\n```python\n"
            'client.cards.get(account_id="acc_1")\nclient.cards.get(account_id="acc_1")\n```',
            f'{answer} The app shows it like this:\n```html\n<div class="notice">{{{{ balance }}}}</div>\n'
            '<div class="notice">{{ balance }}</div>\n```',
        )[k % 2]
    if kind == "apology":
        return f"I'm sorry to hear that. {answer}"
    if kind == "list":
        section = rng.choice(_SECTIONS)
        return f"To sort out {topic}:\n1. Open the app\n2. Go to {section}\n3. Follow the steps shown"
    if kind == "numbers":
        ref = f"2024-0115-{k % 9000 + 1000}"
        return f"{answer} Transfers over £1,000 can take up to 2 days; references look like {ref}."
    if kind == "policy":
        return (
            "We cannot reverse a card payment once it has settled, but you can raise a dispute about "
            f"{topic} from {rng.choice(_SECTIONS)} in the app."
        )
    raise ValueError(f"unknown tricky kind {kind!r}")


def instruction_dataset(
    queries: pl.DataFrame, *, seed: int, defects_per_kind: int, tricky_per_kind: int
) -> pl.DataFrame:
    """Banking77 queries (columns ``text``, ``label``) as prompt/response rows with planted defects.

    Returns:
        id (``q<n>``), prompt, response, ``planted`` (the defect kind, a check code, or null) and
        ``tricky`` (a TRICKY_KINDS code for clean rows built to look suspicious, or null).

    Raises:
        ValueError: fewer queries than defects and tricky rows together.
    """
    n = queries.height
    planted_n = defects_per_kind * len(INSTRUCTION_CHECKS)
    tricky_n = tricky_per_kind * len(TRICKY_KINDS)
    if planted_n + tricky_n > n:
        raise ValueError(f"{n} queries cannot hold {planted_n} defects and {tricky_n} tricky rows")
    rng = np.random.default_rng(seed)
    chosen = rng.permutation(n)[: planted_n + tricky_n]
    planted: dict[int, str] = {
        int(i): INSTRUCTION_CHECKS[k // defects_per_kind] for k, i in enumerate(chosen[:planted_n])
    }
    tricky: dict[int, str] = {
        int(i): TRICKY_KINDS[k // tricky_per_kind] for k, i in enumerate(chosen[planted_n:])
    }
    prompts, responses = [], []
    for i, (prompt, label) in enumerate(queries.select("text", "label").iter_rows()):
        topic = str(label).replace("_", " ").lower()
        answer = _fill(_ANSWERS[int(rng.integers(len(_ANSWERS)))], topic, rng)
        if i in planted:
            answer = _defect(planted[i], prompt, answer, topic, rng)
        elif i in tricky:
            answer = _tricky(tricky[i], prompt, answer, topic, rng)
        prompts.append(prompt)
        responses.append(answer)
    return pl.DataFrame(
        {
            "id": [f"q{i}" for i in range(n)],
            "prompt": prompts,
            "response": responses,
            "planted": [planted.get(i) for i in range(n)],
            "tricky": [tricky.get(i) for i in range(n)],
        },
        schema={
            "id": pl.String,
            "prompt": pl.String,
            "response": pl.String,
            "planted": pl.String,
            "tricky": pl.String,
        },
    )


def check_scores(
    detected: pl.DataFrame, truth: pl.DataFrame, *, primary: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Recall and precision of every check against the planted truth.

    Args:
        detected: ``detect_instruction_issues`` output (an ``id`` and a bool column per check).
        truth: ``id``, ``planted``, ``tricky`` (from :func:`instruction_dataset`).
        primary: ``id``, ``primary`` (the check a row was removed or held under); gives
            ``primary_precision``, the precision of the reasons that reach removed/held.

    Returns:
        One row per check: planted, found, recall, flagged (rows the check fails),
        clean_false_positives (clean rows it fails, tricky ones included), on_other_defects
        (rows planted with another defect that also show this one: a ``<br>`` planted as an
        empty response is also markup), precision = found / (found + clean_false_positives),
        and ``primary_precision``: of the rows removed or held under this check, the share
        planted with it.
    """
    joined = detected.join(truth.select("id", "planted", "tricky"), on="id", how="inner")
    if primary is not None:
        joined = joined.join(primary.select("id", "primary"), on="id", how="left")
    rows = []
    for check in INSTRUCTION_CHECKS:
        is_planted = pl.col("planted") == check
        planted = joined.filter(is_planted).height
        found = joined.filter(is_planted & pl.col(check)).height
        flagged = joined.filter(pl.col(check)).height
        clean_fp = joined.filter(pl.col("planted").is_null() & pl.col(check)).height
        row = {
            "check": check,
            "planted": planted,
            "found": found,
            "recall": round(found / planted, 4) if planted else None,
            "flagged": flagged,
            "clean_false_positives": clean_fp,
            "on_other_defects": flagged - found - clean_fp,
            "precision": round(found / (found + clean_fp), 4) if found + clean_fp else None,
        }
        if primary is not None:
            under = joined.filter(pl.col("primary") == check)
            right = under.filter(pl.col("planted") == check).height
            row["primary_precision"] = round(right / under.height, 4) if under.height else None
        rows.append(row)
    return pl.DataFrame(rows)
