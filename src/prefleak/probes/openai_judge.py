"""A pairwise judge behind any OpenAI-compatible chat completions endpoint (OpenAI, vLLM's server,
llama.cpp, a gateway), with stdlib HTTP only.

Judging runs unattended for hours against rate-limited, paid endpoints, so the client retries what
is transient (timeouts, lost connections, 429, 5xx) with exponential backoff and jitter, honours
Retry-After, fails at once on other client errors (a wrong model name will not fix itself), and
stops at a per-run request budget. The API key is read from the environment at call time and is
never written to a log or an exception.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from prefleak.probes.judges import REMINDER, Judgement, pairwise_prompt, parse_choice

log = logging.getLogger(__name__)

MAX_WAIT_S = 120.0  # no single backoff or Retry-After wait is longer


class BudgetExceeded(RuntimeError):
    """The run's max_requests is spent: judging more would cost more than was allowed."""


class JudgeRequestError(RuntimeError):
    """The endpoint refused a request for good (4xx other than 429), or kept failing after every
    retry."""


@dataclass(frozen=True)
class OpenAIJudgeOptions:
    """Where the judge lives and how hard to try. `name` (default: `model`) is the judge id
    written into verdict events; `max_requests` bounds every HTTP request, retries included."""

    base_url: str
    model: str
    api_key_env: str | None = None
    timeout_s: float = 60.0
    max_retries: int = 4
    backoff_s: float = 1.0
    concurrency: int = 4
    max_requests: int | None = None
    max_tokens: int = 16
    name: str | None = None


class _Transient(Exception):
    """A failure worth retrying, with the server's Retry-After in seconds when it sent one."""

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class OpenAIJudge:
    """Implements PairwiseJudge over POST {base_url}/chat/completions."""

    def __init__(self, options: OpenAIJudgeOptions) -> None:
        self.options = options
        self.name = options.name or options.model
        self.requests_made = 0
        self.unparseable = 0
        self._url = options.base_url.rstrip("/") + "/chat/completions"
        self._lock = threading.Lock()

    def judge_many(self, items: Sequence[tuple[str, str, str]]) -> list[Judgement]:
        """One Judgement per item, in order, asked `concurrency` at a time. Raises BudgetExceeded
        before sending anything when the items cannot fit in what is left of the budget, and when
        retries spend the rest of it."""
        limit = self.options.max_requests
        if limit is not None and self.requests_made + len(items) > limit:
            raise BudgetExceeded(
                f"{len(items)} comparisons need at least {len(items)} requests; "
                f"{limit - self.requests_made} of {limit} are left"
            )
        with ThreadPoolExecutor(max_workers=max(self.options.concurrency, 1)) as pool:
            return list(pool.map(lambda item: self._judge(*item), items))

    def _judge(self, prompt: str, first: str, second: str) -> Judgement:
        messages = [{"role": "user", "content": pairwise_prompt(prompt, first, second)}]
        raw = ""
        attempts = self.options.max_retries + 1
        for attempt in range(1, attempts + 1):
            raw = self._complete(messages)
            choice = parse_choice(raw)
            if choice is not None:
                return Judgement(choice=choice, raw=raw, attempts=attempt)
            messages = [
                *messages,
                {"role": "assistant", "content": raw},
                {"role": "user", "content": REMINDER},
            ]
        with self._lock:
            self.unparseable += 1
        log.warning("%s: unreadable verdict after %d attempts: %.80r", self.name, attempts, raw)
        return Judgement(choice=None, raw=raw, attempts=attempts)

    def _complete(self, messages: list[dict[str, str]]) -> str:
        """The reply text of one chat completion, retrying transient failures."""
        body = json.dumps(
            {
                "model": self.options.model,
                "messages": messages,
                "max_tokens": self.options.max_tokens,
                "temperature": 0,
            }
        ).encode()
        for retry in range(self.options.max_retries + 1):
            self._spend_one_request()
            try:
                return self._post(body)
            except _Transient as failure:
                if retry == self.options.max_retries:
                    raise JudgeRequestError(
                        f"{self._url}: gave up after {retry + 1} attempts ({failure.reason})"
                    ) from None
                wait = self._wait_s(retry, failure.retry_after_s)
                log.warning(
                    "%s: %s; retry %d/%d in %.2f s",
                    self._url,
                    failure.reason,
                    retry + 1,
                    self.options.max_retries,
                    wait,
                )
                time.sleep(wait)
        raise AssertionError("unreachable: the last retry returns or raises")

    def _spend_one_request(self) -> None:
        with self._lock:
            limit = self.options.max_requests
            if limit is not None and self.requests_made >= limit:
                raise BudgetExceeded(f"request budget of {limit} spent")
            self.requests_made += 1

    def _post(self, body: bytes) -> str:
        request = urllib.request.Request(self._url, data=body, method="POST")
        request.add_header("Content-Type", "application/json")
        key = self._api_key()
        if key is not None:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=self.options.timeout_s) as response:
                payload: Any = json.loads(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read()[:200].decode(errors="replace")
            if error.code == 429 or error.code >= 500:
                raise _Transient(
                    f"HTTP {error.code}", _retry_after_s(error.headers.get("Retry-After"))
                ) from None
            raise JudgeRequestError(f"{self._url}: HTTP {error.code}: {detail}") from None
        except (TimeoutError, ConnectionError, urllib.error.URLError) as error:
            reason = getattr(error, "reason", error)
            raise _Transient(f"{type(error).__name__}: {reason}") from None
        try:
            return str(payload["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError):
            raise JudgeRequestError(
                f"{self._url}: not a chat completion: {payload!r:.200}"
            ) from None

    def _api_key(self) -> str | None:
        name = self.options.api_key_env
        if name is None:
            return None
        key = os.environ.get(name)
        if not key:
            raise JudgeRequestError(f"environment variable {name} (the judge's API key) is not set")
        return key

    def _wait_s(self, retry: int, retry_after_s: float | None) -> float:
        """The server's Retry-After when it gave one, else exponential backoff with full jitter
        (spreads the retries of concurrent workers apart)."""
        if retry_after_s is not None:
            return min(retry_after_s, MAX_WAIT_S)
        ceiling = self.options.backoff_s * 2.0**retry
        return min(ceiling * (0.5 + random.random() / 2), MAX_WAIT_S)


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date (RFC 9110)."""
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(float(when.timestamp()) - time.time(), 0.0)
