"""A custom task type, as shown in the README: count the words of a text."""

from collections import Counter

from pydantic import BaseModel, Field

from core.registry import task
from jobs.runner import report_progress


class WordCountParams(BaseModel):
    """Parameters of word_count: the text, and how many top words to return."""

    text: str
    top: int = Field(default=3, ge=1, le=100)


@task("word_count", max_retries=2, timeout_s=60, params_model=WordCountParams)
def word_count(params: WordCountParams) -> dict:
    """Count the words of `text` and return the most common ones."""
    words = params.text.lower().split()
    report_progress(len(words), len(words), "counted")
    return {"words": len(words), "top": Counter(words).most_common(params.top)}
