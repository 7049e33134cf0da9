"""The /bind flow: real name, ID number, the platform, the SMS code, the binding."""

from __future__ import annotations

import math
import re

from pydantic import SecretStr

from dialogs.identity import IdProblem, NameProblem, check_id_number, check_name, id_length
from dialogs.masking import mask_id_number
from dialogs.models import (
    Binding,
    Button,
    Outcome,
    PendingBind,
    PlatformName,
    Reply,
    Session,
    State,
)
from dialogs.ports import (
    CodeRefused,
    CodeSent,
    InsuranceProblem,
    PlatformInfo,
    ProblemCode,
    Refusal,
    Verdict,
)
from dialogs.turn import Turn

_CODE = re.compile(r"^\d{4,8}$")


class BindingFlow(Turn):
    async def cmd_bind(self, _arg: str = "") -> Outcome:
        if self.profile.binding is not None:
            return self.out(
                self.t.gettext(
                    "You are already bound to ID {id}. To bind another account, /unbind first."
                ).format(id=mask_id_number(self.profile.binding.id_number.get_secret_value()))
            )
        if self.session.state is State.BIND_CODE:
            await self.otp.discard(self.user)
        until = await self.otp.locked_until(self.user)
        if until is not None:
            return self.locked_out(until)
        return self.out(
            self.t.gettext(
                "Let's link your medical-insurance account. I need your real name and ID number to find "
                "you on the insurance platform; the SMS code goes to the phone number the platform has on "
                "file, not to one you type. Your ID number is stored encrypted, and /unbind erases it at "
                "any time. By continuing you agree to this."
            ),
            self.t.gettext("Step 1 of 3: your real name, as on your ID card (or /cancel):"),
            session=Session(state=State.BIND_NAME),
        )

    async def on_name(self) -> Outcome:
        name = check_name(self.text)
        if isinstance(name, NameProblem):
            message = {
                NameProblem.TOO_SHORT: self.t.gettext(
                    "That name is too short. Please send your full real name as on your ID card, e.g. 张伟."
                ),
                NameProblem.TOO_LONG: self.t.gettext(
                    "That name is too long. Please send your real name as on your ID card, e.g. 张伟."
                ),
                NameProblem.CHARACTERS: self.t.gettext(
                    "A name holds only Chinese characters, the middle dot · or Latin letters. Please send "
                    "your real name as on your ID card, e.g. 张伟 or 阿依古丽·买买提."
                ),
                NameProblem.LOOKS_LIKE_ID: self.t.gettext(
                    "That looks like an ID number. Your name first, please, e.g. 张伟; the ID number comes next."
                ),
            }[name]
            return self.out(message, session=self.session, sensitive=name is NameProblem.LOOKS_LIKE_ID)
        return self.out(
            self.t.gettext(
                "Step 2 of 3: your 18-character Resident ID number (居民身份证号), e.g. 11010519491231002X:"
            ),
            session=Session(state=State.BIND_ID, pending=PendingBind(name=SecretStr(name))),
        )

    async def on_id_number(self) -> Outcome:
        pending = self.session.pending
        if pending is None or pending.name is None:  # the session lost its pending part: start over
            return await self.cmd_bind()
        checked = check_id_number(self.text, today=self.now.astimezone(self.cfg.timezone).date())
        if isinstance(checked, IdProblem):
            return self.out(self.id_problem(checked), session=self.session, sensitive=True)
        platforms = self.ranked_platforms(checked)
        if len(platforms) == 1:
            return await self.look_up(pending.name, checked, platforms[0].name)
        return self.ask_platform(
            Session(
                state=State.BIND_PLATFORM,
                pending=PendingBind(name=pending.name, id_number=SecretStr(checked)),
            ),
            platforms,
            sensitive=True,
        )

    def ranked_platforms(self, id_number: str) -> list[PlatformInfo]:
        """The platforms, those serving the ID number's region first (most specific first)."""
        return sorted(self.insurance.platforms(), key=lambda p: -p.serves(id_number))

    def ask_platform(
        self, session: Session, platforms: list[PlatformInfo], *, sensitive: bool = False
    ) -> Outcome:
        best = platforms[0] if platforms[0].serves(self.id_of(session)) else None
        buttons = tuple(
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
        text = self.t.gettext("Which insurance platform are you insured on? Choose one:")
        return Outcome(
            replies=(
                Reply(
                    text=text,
                    buttons=buttons,
                    sensitive_input=sensitive,
                    deleted_note=self.deletion_note(sensitive),
                ),
            ),
            session=session,
        )

    @staticmethod
    def id_of(session: Session) -> str:
        pending = session.pending
        return pending.id_number.get_secret_value() if pending and pending.id_number else ""

    async def on_platform(self, answer: str) -> Outcome:
        pending = self.session.pending
        if self.session.state is not State.BIND_PLATFORM or pending is None or pending.name is None:
            return self.out(
                self.t.gettext("There is no platform to choose right now. Send /bind to start binding.")
            )
        id_number = self.id_of(self.session)
        platforms = self.ranked_platforms(id_number)
        wanted = answer.strip().lower()
        chosen = next((p for p in platforms if wanted in (p.name.lower(), p.label.lower())), None)
        if chosen is None and wanted.isdigit() and 1 <= int(wanted) <= len(platforms):
            chosen = platforms[int(wanted) - 1]
        if chosen is None:
            return self.ask_platform(self.session, platforms)
        return await self.look_up(pending.name, id_number, chosen.name)

    async def look_up(self, name: SecretStr, id_number: str, platform: PlatformName) -> Outcome:
        try:
            match = await self.insurance.find_member(platform, name.get_secret_value(), id_number)
        except InsuranceProblem as problem:
            return await self.lookup_failed(problem, name)
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
            return self.refused(sent, sensitive=True, session=keep)
        return self.code_step(sent, at_code_step, sensitive=True)

    def id_problem(self, problem: IdProblem) -> str:
        t = self.t
        return {
            IdProblem.LENGTH: t.gettext(
                "An ID number has 18 characters; you sent {n}. Please check it and send it again."
            ).format(n=id_length(self.text)),
            IdProblem.FORMAT: t.gettext(
                "An ID number is 17 digits followed by a digit or X. Please check it and send it again."
            ),
            IdProblem.BIRTH_DATE: t.gettext(
                "The birth date in that ID number (characters 7 to 14, e.g. 19900307) is not a possible "
                "date. Please check it and send it again."
            ),
            IdProblem.CHECKSUM: t.gettext(
                "The last character of that ID number does not match the others, so a character was "
                "probably mistyped. Please check it and send it again."
            ),
            IdProblem.REGION: t.gettext(
                "The first six digits of that ID number are not a known region code. Please check it "
                "and send it again."
            ),
        }[problem]

    async def lookup_failed(self, problem: InsuranceProblem, name: SecretStr) -> Outcome:
        t = self.t
        if problem.code in (ProblemCode.MEMBER_NOT_FOUND, ProblemCode.IDENTITY_MISMATCH):
            until = await self.otp.record_failure(self.user)
            if until is not None:
                return self.locked_out(until)
        if problem.code is ProblemCode.MEMBER_NOT_FOUND:
            return self.out(
                t.gettext(
                    "I could not find insurance records for that ID number. Please check it and send it "
                    "again. If you enrolled recently, your records may not be online yet: try again later "
                    "or call {hotline}."
                ).format(hotline=self.cfg.hotline),
                session=Session(state=State.BIND_ID, pending=PendingBind(name=name)),
                sensitive=True,
            )
        if problem.code is ProblemCode.IDENTITY_MISMATCH:
            return self.out(
                t.gettext(
                    "The name does not match that ID number on the insurance platform. Please send your "
                    "name exactly as on your ID card (with the middle dot · if it has one):"
                ),
                session=Session(state=State.BIND_NAME),
                sensitive=True,
            )
        return self.out(self.platform_problem(problem), sensitive=True)

    def code_step(self, sent: CodeSent, session: Session, *, sensitive: bool = False) -> Outcome:
        """The code went out: say where, with a button for a new one."""
        resend = Button(label=self.t.gettext("Send a new code"), payload="/resend")
        reply = Reply(
            text=self.code_sent(sent),
            buttons=(resend,),
            sensitive_input=sensitive,
            deleted_note=self.deletion_note(sensitive),
        )
        return Outcome(replies=(reply,), session=session)

    def code_sent(self, sent: CodeSent) -> str:
        return self.t.gettext(
            "Step 3 of 3: I sent a 6-digit code by SMS to {phone}, the number the insurance platform has "
            "on file. It is valid for {minutes} minutes. Send it here (/resend for a new one, /cancel to "
            "stop)."
        ).format(phone=sent.masked_phone, minutes=self.cfg.code_ttl_minutes)

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
        return self.out(text, session=keep, sensitive=sensitive)

    async def cmd_resend(self, _arg: str = "") -> Outcome:
        if self.session.state is not State.BIND_CODE:
            return self.out(self.t.gettext("There is no code to resend. Send /bind to start binding."))
        sent = await self.otp.resend(self.user, self.locale)
        if isinstance(sent, CodeRefused):
            return self.refused(sent)
        return self.code_step(sent, self.session)

    async def on_code(self) -> Outcome:
        t = self.t
        code = self.text.replace(" ", "")
        pending = self.session.pending
        if not _CODE.match(code):
            return self.out(
                t.gettext(
                    "Please send the 6-digit code from the SMS (/resend for a new one, /cancel to stop)."
                ),
                session=self.session,
            )
        if (
            pending is None
            or pending.id_number is None
            or pending.member_id is None
            or pending.platform is None
            or pending.phone is None
        ):  # the session lost its pending part: start over
            return await self.cmd_bind()
        check = await self.otp.verify(self.user, code)
        match check.verdict:
            case Verdict.OK:
                binding = Binding(
                    member_id=pending.member_id,
                    platform=pending.platform,
                    id_number=pending.id_number,
                    phone=pending.phone,
                    bound_at=self.now,
                )
                return self.out(
                    t.gettext(
                        "Done! Your account is bound (ID {id}). Try /balance, or /alert 100 to hear from me "
                        "when the balance drops below ¥100."
                    ).format(id=mask_id_number(binding.id_number.get_secret_value())),
                    sensitive=True,
                    set_binding=binding,
                )
            case Verdict.WRONG:
                return self.out(
                    t.ngettext(
                        "That code is not right. {n} try left.",
                        "That code is not right. {n} tries left.",
                        check.tries_left,
                    ).format(n=check.tries_left),
                    session=self.session,
                    sensitive=True,
                )
            case Verdict.VOID if check.locked_until is not None:
                return self.locked_out(check.locked_until)
            case Verdict.VOID:
                text = t.gettext(
                    "That code was wrong too many times and no longer works. Send /resend for a new one."
                )
            case Verdict.EXPIRED:
                text = t.gettext("That code has expired. Send /resend for a new one.")
            case Verdict.LOCKED_OUT if check.locked_until is not None:
                return self.locked_out(check.locked_until)
            case _:
                text = t.gettext("There is no active code. Send /resend for a new one, or /cancel.")
        return self.out(text, session=self.session, sensitive=True)
