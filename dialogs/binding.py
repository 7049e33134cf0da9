"""The /bind flow: real name, ID number, the platform, the SMS code, the binding; and, where the
platform's capabilities ask for them, the local card number before the lookup and the platform's
own face check after it (its link sent, the check followed in the background and whenever the user
writes, for at most ``verification_wait_seconds``; see ``machine.Conversation.follow_face_check``).

Every answer inside the flow says which step the user is at and what it waits for (``prompt``), how to
correct the step before and how to leave. Input that is not even a candidate (a name in Latin letters,
an ID number of the wrong length, a code of the wrong length) is answered without asking the insurance
platform or the SMS-code service, so it costs no attempt; before the last attempt that would pause
binding, the user is told so, and for how long. Failed lookups count for the user and for the ID
number (whichever account tries it), and the warning names the nearer of the two limits.
"""

from __future__ import annotations

import math
import re
from functools import partial

from pydantic import SecretStr

from dialogs.identity import (
    IdProblem,
    NameProblem,
    check_id_number,
    check_name,
    id_length,
    split_name_and_id,
)
from dialogs.masking import mask_id_number
from dialogs.models import (
    Binding,
    Button,
    CachedBalance,
    Event,
    EventKind,
    MemberId,
    Outcome,
    PendingBind,
    PlatformName,
    Reply,
    Session,
    State,
)
from dialogs.ports import (
    CodeCheck,
    CodeRefused,
    CodeSent,
    FaceCheckState,
    Failures,
    IdLookup,
    IdPaused,
    InsuranceProblem,
    MemberMatch,
    PlatformInfo,
    ProblemCode,
    Refusal,
    Verdict,
)
from dialogs.turn import Turn

CODE_DIGITS = 6
"""The length of an SMS code (``bot.identity.otp.OtpLimits.code_digits``): anything else is no code."""
_CODE_SPACING = re.compile(r"[\s\-]")
_COUNTED = frozenset({ProblemCode.MEMBER_NOT_FOUND, ProblemCode.IDENTITY_MISMATCH})
"""The platform's answers that count as failed bind attempts (and may pause binding)."""
_CARD_NUMBER = re.compile(r"[A-Z0-9]{6,20}")
"""A local social-security card number (社保卡号): 6 to 20 letters and digits (the contract's shape)."""
FACE_POLL_FIRST_SECONDS = 2.0
FACE_POLL_MAX_SECONDS = 15.0
"""The background poll of a face check: 2 s, doubling, at most 15 s apart, until the wait is over."""


class BindingFlow(Turn):
    # -- where the user is ---------------------------------------------------------------------

    def total_steps(self) -> int:
        """3 (name, ID number, code), or 4 when there is a platform to choose."""
        return 4 if len(self.insurance.platforms()) > 1 else 3

    def step_of(self, state: State) -> str:
        if state is State.BIND_CARD:
            return self.t.gettext("Extra step (your platform asks for it)")
        if state is State.BIND_FACE:
            return self.t.gettext("Extra step: the face check")
        total = self.total_steps()
        number = {State.BIND_NAME: 1, State.BIND_ID: 2, State.BIND_PLATFORM: 3}.get(state, total)
        return self.t.gettext("Step {n} of {total}").format(n=number, total=total)

    def prompt(self, session: Session | None = None) -> Reply:
        """What the step ``session`` is at waits for, with its buttons: said after every answer in
        the flow, so the user always knows what to send next and how to leave."""
        session = session or self.session
        t, step = self.t, self.step_of(session.state)
        match session.state:
            case State.BIND_NAME:
                text = t.gettext(
                    "{step}: your name exactly as on your Resident ID card, in Chinese characters (with "
                    "the middle dot · if your card has one, e.g. 阿依古丽·买买提). You may send your ID "
                    "number in the same message. /cancel stops binding."
                )
            case State.BIND_ID:
                text = t.gettext(
                    "{step}: your 18-character Resident ID number (居民身份证号), e.g. 11010519491231002X. "
                    "To correct your name, just send it again; /cancel stops binding."
                )
            case State.BIND_PLATFORM:
                platforms = self.ranked_platforms(self.id_of(session))
                text = t.gettext(
                    "{step}: which insurance platform are you insured on? Reply with a number from 1 to "
                    "{count}, or press a button. /cancel stops binding."
                ).format(step=step, count=len(platforms))
                return Reply(text=text, buttons=self.platform_buttons(session, platforms))
            case State.BIND_CODE:
                phone = session.pending.masked_phone if session.pending else None
                text = t.gettext(
                    "{step}: the {digits}-digit code I sent by SMS to {phone}. /resend sends a new one; "
                    "/cancel stops binding."
                ).format(step=step, digits=CODE_DIGITS, phone=phone or "…")
                return Reply(text=text, buttons=(self.resend_button(),))
            case State.BIND_CARD:
                text = t.gettext(
                    "{step}: your local social-security card number (社保卡号), 6 to 20 letters and digits, "
                    "as printed on your card. /cancel stops binding."
                )
            case State.BIND_FACE:
                url = session.pending.face_url if session.pending else None
                text = t.gettext(
                    "{step}: please complete the face check of the insurance platform at {url} . I'll "
                    "continue as soon as it passes (I check for {minutes} minutes); send any message to "
                    "check now. /cancel stops binding."
                ).format(step=step, url=url or "…", minutes=max(1, self.cfg.verification_wait_seconds // 60))
                done = Button(label=t.gettext("I've done the face check"), payload="/facecheck")
                return Reply(text=text, buttons=(done,))
            case _:
                text = t.gettext("{step}: send what I asked for, or /cancel to stop.")
        return Reply(text=text.format(step=step))

    def in_flow(self, *texts: str, session: Session | None = None, sensitive: bool = False) -> Outcome:
        """An answer inside the flow: ``texts``, then what the step waits for (in the same message)."""
        session = session or self.session
        nudge = self.prompt(session)
        text = "\n".join((*texts, nudge.text))
        reply = Reply(
            text=text,
            buttons=nudge.buttons,
            sensitive_input=sensitive,
            deleted_note=self.deletion_note(sensitive),
        )
        return Outcome(replies=(reply,), session=session)

    def resend_button(self) -> Button:
        return Button(label=self.t.gettext("Send a new code"), payload="/resend")

    def bound_note(self) -> str | None:
        """Said to a bound user who asks for something of the bind flow (/resend, /platform)."""
        binding = self.profile.binding
        if binding is None:
            return None
        return self.t.gettext("You are already bound to ID {id}; there is nothing to finish.").format(
            id=mask_id_number(binding.id_number.get_secret_value())
        )

    def platform_gone(self) -> bool:
        """The binding names an insurance platform that is no longer configured."""
        binding = self.profile.binding
        return binding is not None and all(p.name != binding.platform for p in self.insurance.platforms())

    # -- step 1: the name ----------------------------------------------------------------------

    async def cmd_bind(self, _arg: str = "") -> Outcome:
        binding = self.profile.binding
        if binding is not None and not self.platform_gone():
            return self.out(
                self.t.gettext(
                    "You are already bound to ID {id}. To bind another account, /unbind first."
                ).format(id=mask_id_number(binding.id_number.get_secret_value()))
            )
        if self.session.state is State.BIND_CODE:
            await self.otp.discard(self.user)
        until = await self.otp.locked_until(self.user)
        if until is not None:
            return self.failed(self.locked_out(until), "locked_out")
        session = Session(state=State.BIND_NAME)
        consent = self.t.gettext(
            "Let's link your medical-insurance account. I need your real name and ID number to "
            "find you on the insurance platform; the SMS code goes to the phone number the "
            "platform has on file, not to one you type. Your ID number is stored encrypted, and "
            "/unbind erases it at any time. By continuing you agree to this."
        )
        if self.user.partition(":")[0] in self.cfg.kept_in_history and not self.from_page:
            consent += "\n\n" + self.t.gettext(
                "⚠️ This chat app does not let me delete your messages: the ID number you send stays in "
                "this chat's history on your phone. Once you are bound, delete that message yourself "
                "(press and hold it, then Delete)."
            )
        replies: tuple[Reply, ...] = (Reply(text=consent), self.prompt(session))
        proposed = check_name(self.directory_name.get_secret_value()) if self.directory_name else None
        if isinstance(proposed, str):
            yes = Button(label=self.t.gettext("Yes, that is my name"), payload=proposed)
            question = self.t.gettext(
                "Is the name on your ID card {name}? Tap yes, or send the name as it is on the card."
            ).format(name=proposed)
            replies += (Reply(text=question, buttons=(yes,)),)
        return self.noted(Outcome(replies=replies, session=session), Event(kind=EventKind.BIND_STARTED))

    async def on_name(self) -> Outcome:
        both = split_name_and_id(self.text)
        if both is not None:
            return await self.on_name_and_id(*both)
        name = check_name(self.text)
        if isinstance(name, NameProblem):
            return self.in_flow(self.name_problem(name), sensitive=name is NameProblem.LOOKS_LIKE_ID)
        return self.in_flow(session=Session(state=State.BIND_ID, pending=PendingBind(name=SecretStr(name))))

    async def on_name_and_id(self, name_text: str, id_text: str) -> Outcome:
        """Both in one message, at step 1 or 2: the name is checked first, then the ID number."""
        name = check_name(name_text)
        if isinstance(name, NameProblem):
            back = Session(state=State.BIND_NAME)
            return self.in_flow(self.name_problem(name), session=back, sensitive=True)
        return await self.take_id(SecretStr(name), id_text)

    def name_problem(self, problem: NameProblem) -> str:
        t = self.t
        return {
            NameProblem.TOO_SHORT: t.gettext("That name is too short."),
            NameProblem.TOO_LONG: t.gettext("That name is too long."),
            NameProblem.CHARACTERS: t.gettext(
                "A name on the ID card holds only Chinese characters, and in some names the middle dot ·."
            ),
            NameProblem.LATIN: t.gettext(
                "Your Resident ID card shows your name in Chinese characters, and the insurance platform "
                "knows you by them: please send those (e.g. 张伟, not Zhang Wei). Nothing was checked "
                "yet, so this cost no attempt."
            ),
            NameProblem.LOOKS_LIKE_ID: t.gettext(
                "That looks like an ID number. Your name first, please, or both in one message, e.g. "
                "张伟 11010519491231002X."
            ),
        }[problem]

    # -- step 2: the ID number -----------------------------------------------------------------

    async def on_id_number(self) -> Outcome:
        pending = self.session.pending
        if pending is None or pending.name is None:  # the session lost its pending part: start over
            return await self.cmd_bind()
        both = split_name_and_id(self.text)
        if both is not None:  # a corrected name with the ID number
            return await self.on_name_and_id(*both)
        if not any(ch.isdigit() for ch in self.text):
            name = check_name(self.text)
            if name is NameProblem.LATIN:
                return self.in_flow(self.name_problem(name))
            if not isinstance(name, NameProblem):  # the name again: the user corrects step 1
                return self.in_flow(
                    self.t.gettext("OK, I'll use the name {name}.").format(name=name),
                    session=Session(state=State.BIND_ID, pending=PendingBind(name=SecretStr(name))),
                )
        return await self.take_id(pending.name, self.text)

    async def take_id(self, name: SecretStr, text: str) -> Outcome:
        at_id_step = Session(state=State.BIND_ID, pending=PendingBind(name=name))
        checked = check_id_number(text, today=self.now.astimezone(self.cfg.timezone).date())
        if isinstance(checked, IdProblem):
            return self.in_flow(self.id_problem(checked, text), session=at_id_step, sensitive=True)
        platforms = self.ranked_platforms(checked)
        if len(platforms) == 1:
            return await self.look_up(name, checked, platforms[0].name)
        session = Session(
            state=State.BIND_PLATFORM, pending=PendingBind(name=name, id_number=SecretStr(checked))
        )
        return self.in_flow(session=session, sensitive=True)

    def id_problem(self, problem: IdProblem, text: str) -> str:
        t = self.t
        return {
            IdProblem.LENGTH: t.gettext("An ID number has 18 characters; you sent {n}.").format(
                n=id_length(text)
            ),
            IdProblem.FORMAT: t.gettext("An ID number is 17 digits followed by a digit or X."),
            IdProblem.BIRTH_DATE: t.gettext(
                "The birth date in that ID number (characters 7 to 14, e.g. 19900307) is not a possible date."
            ),
            IdProblem.CHECKSUM: t.gettext(
                "The last character of that ID number does not match the others, so a character was "
                "probably mistyped."
            ),
            IdProblem.REGION: t.gettext(
                "The first six digits of that ID number are not a known region code."
            ),
        }[problem]

    # -- step 3 of 4: the platform -------------------------------------------------------------

    def ranked_platforms(self, id_number: str) -> list[PlatformInfo]:
        """The platforms, those serving the ID number's region first (most specific first)."""
        return sorted(self.insurance.platforms(), key=lambda p: -p.serves(id_number))

    def platform_buttons(self, session: Session, platforms: list[PlatformInfo]) -> tuple[Button, ...]:
        best = platforms[0] if platforms and platforms[0].serves(self.id_of(session)) else None
        return tuple(
            Button(
                label=(
                    self.t.gettext("{platform} (matches your ID number)").format(platform=p.label)
                    if p is best
                    else p.label
                ),
                payload=f"/platform {p.name}",
            )
            for p in platforms
        )

    @staticmethod
    def id_of(session: Session) -> str:
        pending = session.pending
        return pending.id_number.get_secret_value() if pending and pending.id_number else ""

    async def on_platform(self, answer: str) -> Outcome:
        pending = self.session.pending
        if self.session.state is not State.BIND_PLATFORM or pending is None or pending.name is None:
            return self.out(
                self.bound_note()
                or self.t.gettext("There is no platform to choose right now. Send /bind to start binding.")
            )
        id_number = self.id_of(self.session)
        platforms = self.ranked_platforms(id_number)
        wanted = answer.strip().lower()
        chosen = next((p for p in platforms if wanted in (p.name.lower(), p.label.lower())), None)
        if chosen is None and wanted.isdigit() and 1 <= int(wanted) <= len(platforms):
            chosen = platforms[int(wanted) - 1]
        if chosen is None and wanted:  # a part of one label only ("上海" for "上海医保")
            partial = [p for p in platforms if wanted in p.label.lower() or wanted in p.name.lower()]
            chosen = partial[0] if len(partial) == 1 else None
        if chosen is None:
            if sum(ch.isdigit() for ch in answer) >= 6:  # an ID number again, say: not echoed, deleted
                return self.in_flow(self.t.gettext("That is not one of the choices."), sensitive=True)
            return self.in_flow(
                self.t.gettext('"{answer}" is not one of the choices.').format(answer=answer[:30])
            )
        return await self.look_up(pending.name, id_number, chosen.name)

    # -- the lookup ----------------------------------------------------------------------------

    async def look_up(
        self, name: SecretStr, id_number: str, platform: PlatformName, card_number: SecretStr | None = None
    ) -> Outcome:
        if card_number is None and (await self.insurance.offers(platform)).card_number:
            session = Session(
                state=State.BIND_CARD,
                pending=PendingBind(name=name, id_number=SecretStr(id_number), platform=platform),
            )
            return self.in_flow(session=session, sensitive=True)
        lookup = await self.otp.start_lookup(SecretStr(id_number))
        if isinstance(lookup, IdPaused) and lookup.running:
            busy = self.out(
                self.t.gettext(
                    "This ID number is being checked from other chats right now. Please try again in a "
                    "few minutes."
                ),
                sensitive=True,
            )
            return self.failed(busy, "id_busy", insurer=platform)
        if isinstance(lookup, IdPaused):
            return self.failed(self.id_paused(lookup.until), "id_paused", insurer=platform)
        try:
            match = await self.insurance.find_member(
                platform,
                name.get_secret_value(),
                id_number,
                card_number=card_number.get_secret_value() if card_number else None,
            )
        except InsuranceProblem as problem:
            if problem.code is ProblemCode.VERIFICATION_REQUIRED and problem.face_check is not None:
                await self.otp.end_lookup(lookup)  # found: the face check decides, not a failure
                return self.face_step(name, id_number, platform, card_number, problem)
            outcome = await self.lookup_failed(problem, name, lookup, card=card_number is not None)
            locked = outcome.session == Session() and problem.code in _COUNTED
            return self.failed(outcome, problem.code.value, insurer=platform, locked=locked)
        except BaseException:  # not the member's fault: the lookup does not count against the ID number
            await self.otp.end_lookup(lookup)
            raise
        await self.otp.end_lookup(lookup)
        return await self.send_code(match, name, id_number)

    async def send_code(
        self, match: MemberMatch, name: SecretStr, id_number: str, *, sensitive: bool = True
    ) -> Outcome:
        """The member is found (and checked): the SMS code goes to the phone on file."""
        sent = await self.otp.send(self.user, match.phone, self.locale)
        at_code_step = Session(
            state=State.BIND_CODE,
            pending=PendingBind(
                name=name,
                id_number=SecretStr(id_number),
                member_id=match.member_id,
                platform=match.platform,
                phone=match.phone,
                masked_phone=sent.masked_phone,
            ),
        )
        if isinstance(sent, CodeRefused):
            # A code went to this phone moments ago: wait at the code step, where /resend works.
            keep = at_code_step if sent.reason is Refusal.TOO_SOON else None
            refused = self.refused(sent, sensitive=sensitive, session=keep)
            return self.failed(refused, f"code_{sent.reason.value}", insurer=match.platform)
        sent_step = self.code_step(sent, at_code_step, sensitive=sensitive)
        return self.noted(sent_step, Event(kind=EventKind.CODE_SENT, insurer=match.platform))

    def failure_warning(self, failures: Failures | None) -> tuple[str, ...]:
        """Before the last attempt that would pause binding: that it would, and for how long."""
        if failures is None or failures.left != 1 or failures.locked_until is not None:
            return ()
        minutes = max(1, math.ceil(failures.pause_seconds / 60))
        if failures.per_id:
            return (
                self.t.ngettext(
                    "Careful: one more failed attempt with this ID number, from any account, pauses "
                    "binding with it for {minutes} minute.",
                    "Careful: one more failed attempt with this ID number, from any account, pauses "
                    "binding with it for {minutes} minutes.",
                    minutes,
                ).format(minutes=minutes),
            )
        return (
            self.t.ngettext(
                "Careful: one more failed attempt pauses binding for {minutes} minute.",
                "Careful: one more failed attempt pauses binding for {minutes} minutes.",
                minutes,
            ).format(minutes=minutes),
        )

    async def lookup_failed(
        self, problem: InsuranceProblem, name: SecretStr, lookup: IdLookup, *, card: bool = False
    ) -> Outcome:
        t = self.t
        failures = None
        if problem.code in (ProblemCode.MEMBER_NOT_FOUND, ProblemCode.IDENTITY_MISMATCH):
            failures = await self.otp.record_failure(self.user, lookup)
            if failures.locked_until is not None and failures.per_id:
                return self.id_paused(failures.locked_until)
            if failures.locked_until is not None:
                return self.locked_out(failures.locked_until, sensitive=True)
        else:
            await self.otp.end_lookup(lookup)
        if problem.code is ProblemCode.MEMBER_NOT_FOUND:
            return self.in_flow(
                t.gettext(
                    "I could not find insurance records for that ID number. If you enrolled recently, "
                    "your records may not be online yet: try again later or call {hotline}."
                ).format(hotline=self.cfg.hotline),
                *self.failure_warning(failures),
                session=Session(state=State.BIND_ID, pending=PendingBind(name=name)),
                sensitive=True,
            )
        if problem.code is ProblemCode.IDENTITY_MISMATCH:
            return self.in_flow(
                t.gettext("The name, ID number and card number do not match on the insurance platform.")
                if card
                else t.gettext("The name does not match that ID number on the insurance platform."),
                *self.failure_warning(failures),
                session=Session(state=State.BIND_NAME),
                sensitive=True,
            )
        return self.out(self.platform_problem(problem), sensitive=True)

    # -- extra steps: the local card number, the face check ------------------------------------

    async def on_card(self) -> Outcome:
        pending = self.session.pending
        if pending is None or pending.name is None or pending.id_number is None or pending.platform is None:
            return await self.cmd_bind()
        card = "".join(self.text.split()).upper()
        if not _CARD_NUMBER.fullmatch(card):
            return self.in_flow(
                self.t.gettext(
                    "A card number is 6 to 20 letters and digits (no other signs). Nothing was checked, so "
                    "this cost no attempt."
                ),
                sensitive=any(ch.isdigit() for ch in card),
            )
        return await self.look_up(
            pending.name, pending.id_number.get_secret_value(), pending.platform, SecretStr(card)
        )

    def face_step(
        self,
        name: SecretStr,
        id_number: str,
        platform: PlatformName,
        card_number: SecretStr | None,
        problem: InsuranceProblem,
    ) -> Outcome:
        """The platform asks for its face check: send the link, wait at the face step, and follow
        the ticket in the background (the user may also just write again)."""
        assert problem.face_check is not None
        session = Session(
            state=State.BIND_FACE,
            pending=PendingBind(
                name=name,
                id_number=SecretStr(id_number),
                platform=platform,
                card_number=card_number,
                ticket=problem.face_check.ticket,
                face_url=problem.face_check.url,
                face_since=self.now,
                locale=self.locale,
            ),
        )
        followups = self.conv.followups
        if followups is not None:  # a step run again (a guard conflict) starts no second one
            ticket = problem.face_check.ticket
            followups.start(
                self.user, f"face|{ticket}", partial(self.conv.follow_face_check, self.user, ticket)
            )
        return self.in_flow(session=session, sensitive=True)

    async def on_face(self) -> Outcome:
        """At the face step, any message (or the button) asks the platform where the check stands."""
        pending = self.session.pending
        if (
            pending is None
            or pending.name is None
            or pending.id_number is None
            or pending.platform is None
            or pending.ticket is None
        ):
            return await self.cmd_bind()
        return await self.face_answer(pending, quiet=False) or self.in_flow(
            self.t.gettext("The face check has not passed yet.")
        )

    async def face_answer(self, pending: PendingBind, *, quiet: bool, over: bool = False) -> Outcome | None:
        """Where the face check stands, as an answer: the code step once it passed, the end of the
        bind once it failed, expired or the wait is over. Still pending: None (``quiet``: the
        background poll, which then says nothing)."""
        assert pending.platform is not None
        assert pending.ticket is not None
        assert pending.name is not None
        assert pending.id_number is not None
        t = self.t
        try:
            state, match = await self.insurance.face_check(pending.platform, pending.ticket)
        except InsuranceProblem as problem:
            if quiet:
                return None
            return self.in_flow(self.platform_problem(problem))
        if state is FaceCheckState.PASSED and match is not None:
            # Answering "done?" or nothing (the background poll): no message with personal data.
            return await self.send_code(
                match, pending.name, pending.id_number.get_secret_value(), sensitive=False
            )
        if state is FaceCheckState.FAILED:
            failures = await self.otp.record_failure(self.user)
            if failures.locked_until is not None:
                return self.locked_out(failures.locked_until)
            return self.out(
                t.gettext(
                    "The insurance platform's face check did not pass, so I can't bind this account. "
                    "Send /bind to try again, or call {hotline}."
                ).format(hotline=self.cfg.hotline),
                *self.failure_warning(failures),
            )
        waited = (self.now - (pending.face_since or self.now)).total_seconds()
        if state is FaceCheckState.EXPIRED or over or waited >= self.cfg.verification_wait_seconds:
            return self.out(
                t.gettext(
                    "The face check was not completed in time, so binding stopped. Send /bind to start "
                    "again when you are ready."
                )
            )
        return None

    # -- step 3 (or 4): the code ---------------------------------------------------------------

    def code_step(self, sent: CodeSent, session: Session, *, sensitive: bool = False) -> Outcome:
        """The code went out: say where, with a button for a new one."""
        reply = Reply(
            text=self.code_sent(sent, session),
            buttons=(self.resend_button(),),
            sensitive_input=sensitive,
            deleted_note=self.deletion_note(sensitive),
        )
        return Outcome(replies=(reply,), session=session)

    def code_sent(self, sent: CodeSent, session: Session) -> str:
        return self.t.gettext(
            "{step}: I sent a 6-digit code by SMS to {phone}, the number the insurance platform has "
            "on file. It is valid for {minutes} minutes. Send it here (/resend for a new one, /cancel to "
            "stop)."
        ).format(step=self.step_of(session.state), phone=sent.masked_phone, minutes=self.cfg.code_ttl_minutes)

    def at_code_step(self, *texts: str, sensitive: bool = False) -> Outcome:
        """An answer at the code step: it keeps the step and its button for a new code."""
        reply = Reply(
            text="\n".join(texts),
            buttons=(self.resend_button(),),
            sensitive_input=sensitive,
            deleted_note=self.deletion_note(sensitive),
        )
        return Outcome(replies=(reply,), session=self.session)

    def refused(
        self, refusal: CodeRefused, *, sensitive: bool = False, session: Session | None = None
    ) -> Outcome:
        t = self.t
        retry = refusal.retry_at
        if refusal.reason is Refusal.LOCKED_OUT and retry is not None:
            return self.locked_out(retry)
        if refusal.reason is Refusal.TOO_SOON and retry is not None:
            text = t.gettext(
                "Please wait: a new code can be sent at {time} (in {seconds} s); then send /resend."
            ).format(
                time=retry.astimezone(self.cfg.timezone).strftime("%H:%M:%S"),
                seconds=max(1, math.ceil((retry - self.now).total_seconds())),
            )
        elif refusal.reason is Refusal.HOURLY_LIMIT and retry is not None:
            text = t.gettext(
                "Too many codes for this account or phone in the last hour. You can ask for a new one at {time}."
            ).format(time=self.at(retry))
        elif refusal.reason is Refusal.NO_CODE:
            return self.out(t.gettext("There is no code to resend. Send /bind to start binding."))
        else:
            text = t.gettext("The SMS could not be sent. Please try /resend in a minute.")
        keep = session or (self.session if self.session.state is State.BIND_CODE else Session())
        if keep.state is State.BIND_CODE:  # a code sent before still works meanwhile
            return self.in_flow(text, session=keep, sensitive=sensitive)
        return self.out(text, session=keep, sensitive=sensitive)

    async def cmd_resend(self, _arg: str = "") -> Outcome:
        if self.session.state is not State.BIND_CODE:
            return self.out(
                self.bound_note()
                or self.t.gettext("There is no code to resend. Send /bind to start binding.")
            )
        sent = await self.otp.resend(self.user, self.locale)
        if isinstance(sent, CodeRefused):
            return self.refused(sent)
        return self.code_step(sent, self.session)

    def not_a_code(self, code: str) -> str:
        if code.isdigit():
            return self.t.gettext(
                "A code has {digits} digits; you sent {n}. That did not count as a try."
            ).format(digits=CODE_DIGITS, n=len(code))
        return self.t.gettext(
            "A code is {digits} digits, with no letters or other signs. That did not count as a try."
        ).format(digits=CODE_DIGITS)

    async def on_code(self) -> Outcome:
        code = _CODE_SPACING.sub("", self.text)
        pending = self.session.pending
        if len(code) != CODE_DIGITS or not code.isdigit():
            return self.in_flow(self.not_a_code(code), sensitive=any(ch.isdigit() for ch in code))
        if (
            pending is None
            or pending.id_number is None
            or pending.member_id is None
            or pending.platform is None
            or pending.phone is None
        ):  # the session lost its pending part: start over
            return await self.cmd_bind()
        check = await self.otp.verify(self.user, code)
        outcome = await self.code_checked(
            check, pending.member_id, pending.platform, pending.id_number, pending.phone
        )
        if check.verdict is Verdict.OK:
            return self.noted(outcome, Event(kind=EventKind.BOUND, insurer=pending.platform))
        locked = check.verdict is Verdict.VOID and check.locked_until is not None
        return self.failed(outcome, f"code_{check.verdict.value}", insurer=pending.platform, locked=locked)

    async def code_checked(
        self,
        check: CodeCheck,
        member: MemberId,
        platform: PlatformName,
        id_number: SecretStr,
        phone: SecretStr,
    ) -> Outcome:
        t = self.t
        match check.verdict:
            case Verdict.OK:
                return await self.bound(member, platform, id_number, phone)
            case Verdict.WRONG:
                wrong = t.ngettext(
                    "That code is not right. {n} try left.",
                    "That code is not right. {n} tries left.",
                    check.tries_left,
                ).format(n=check.tries_left)
                warning = self.failure_warning(check.failures) if check.tries_left == 1 else ()
                hint = (
                    (t.gettext("(A code wrong too often counts as one.) If unsure, /resend first."),)
                    if warning
                    else ()
                )
                return self.in_flow(wrong, *warning, *hint, sensitive=True)
            case Verdict.VOID if check.locked_until is not None:
                return self.locked_out(check.locked_until)
            case Verdict.VOID:
                text = t.gettext(
                    "That code was wrong too many times and no longer works. Send /resend for a new one."
                )
                return self.at_code_step(text, *self.failure_warning(check.failures), sensitive=True)
            case Verdict.EXPIRED:
                text = t.gettext("That code has expired. Send /resend for a new one.")
            case Verdict.LOCKED_OUT if check.locked_until is not None:
                return self.locked_out(check.locked_until)
            case _:
                text = t.gettext("There is no active code. Send /resend for a new one, or /cancel.")
        return self.at_code_step(text, sensitive=True)

    async def bound(
        self, member: MemberId, platform: PlatformName, id_number: SecretStr, phone: SecretStr
    ) -> Outcome:
        """The right code: the binding, and what it can do, as the member's insurance allows (the
        balance says whether there is a personal account; it is kept for the next /balance)."""
        try:
            view = await self.insurance.balance(platform, member)
        except InsuranceProblem:
            view = None
        personal = None if view is None else view.personal_account is not None
        binding = Binding(
            member_id=member,
            platform=platform,
            id_number=id_number,
            phone=phone,
            bound_at=self.now,
            personal_account=personal,
        )
        masked = mask_id_number(id_number.get_secret_value())
        if personal is True:
            text = self.t.gettext(
                "Done! Your account is bound (ID {id}). Try /balance, or /alert 100 to hear from me when "
                "the balance drops below ¥100."
            )
        elif personal is False:
            text = self.t.gettext(
                "Done! Your account is bound (ID {id}). Try /balance to see this year's pooled fund. Your "
                "insurance has no personal account, so there is no balance for me to alert you about."
            )
        else:
            text = self.t.gettext("Done! Your account is bound (ID {id}). Try /balance.")
        cache = view is not None and self.cfg.balance_cache_seconds > 0
        cached = CachedBalance(view=view, fetched_at=self.now) if view is not None and cache else None
        return self.out(text.format(id=masked), sensitive=True, set_binding=binding, cache_balance=cached)
