/** The mails the service sends: a subject, a plain-text body and an HTML body each. */
export interface Mail {
  subject: string
  text: string
  html: string
  /** The request that carries out what the mail asks (development logs it as a ready curl line). */
  request?: { url: string, body: Record<string, string> }
}

/**
 * What a mail asks its reader to do: follow a link to the app (built from
 * EMAIL_VERIFY_URL or PASSWORD_RESET_URL), or, with none configured, give
 * the token to the app, which sends it to the service's endpoint.
 */
export interface Action {
  link: string | null
  token: string
  request: { url: string, body: Record<string, string> }
}

const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

function mail (subject: string, paragraphs: string[], action?: Action & { label: string }): Mail {
  // Without a link (no app URL configured), never one the service cannot answer: the token, to paste into the app.
  const steps = !action ? [] : action.link ? [`${action.label}: ${action.link}`] : [`${action.label}: give your app this token: ${action.token}`]
  const text = [...paragraphs, ...steps].join('\n\n') + '\n'
  const body = paragraphs.map((p) => `<p>${escape(p)}</p>`).join('\n') + (!action
    ? ''
    : action.link
      ? `\n<p><a href="${escape(action.link)}">${escape(action.label)}</a></p>\n<p style="color:#666;font-size:small">${escape(action.link)}</p>`
      : `\n<p>${escape(action.label)}: give your app this token:</p>\n<p><code>${escape(action.token)}</code></p>`)
  return { subject, text, html: `<!doctype html><html><body style="font-family:sans-serif">\n${body}\n</body></html>\n`, ...(action && { request: action.request }) }
}

const hours = (seconds: number) => (seconds % 3600 === 0 ? `${seconds / 3600} hour${seconds === 3600 ? '' : 's'}` : `${Math.round(seconds / 60)} minutes`)

export const templates = {
  verifyEmail: (action: Action, ttl: number) => mail('Confirm your email address', [
    'Please confirm that this is your email address.',
    `It works once and for ${hours(ttl)}. If you did not sign up, ignore this mail.`
  ], { ...action, label: 'Confirm my address' }),

  signupAttempt: () => mail('Someone tried to sign up with your address', [
    'Someone tried to create an account with this email address, which already has one.',
    'If it was you, sign in instead, or reset your password if you forgot it. If it was not, you need not do anything.'
  ]),

  resetPassword: (action: Action, ttl: number) => mail('Reset your password', [
    'Someone asked to reset the password of the account with this email address.',
    `If it was you, choose a new password with the link below. It works once and for ${hours(ttl)}. If it was not, ignore this mail: your password stays as it is.`
  ], { ...action, label: 'Choose a new password' }),

  confirmNewEmail: (action: Action, ttl: number) => mail('Confirm your new email address', [
    'Please confirm that this is the new email address of your account.',
    `The link works once and for ${hours(ttl)}. Until you confirm, your account keeps its old address.`
  ], { ...action, label: 'Confirm my new address' }),

  changeToTakenAddress: () => mail('Someone tried to move an account to your address', [
    'Someone signed in to another account asked to change its email address to this one, which already has an account. Nothing was changed.',
    'If it was you, sign in to the account that has this address instead. If it was not, you need not do anything.'
  ]),

  recoveryCodeUsed: (left: number, few: boolean) => mail('A recovery code of your account was used', [
    `Someone signed in to your account with one of its recovery codes, in place of a code from your authenticator app. ${left} unused recovery code${left === 1 ? ' is' : 's are'} left.`,
    ...(few ? ['Few are left: sign in and make a new set (the old ones then stop working).'] : []),
    'If it was not you, reset your password at once and make new recovery codes.'
  ]),

  emailChanged: (newEmail: string) => mail('Your email address was changed', [
    `The email address of your account was changed to ${newEmail}.`,
    'If you did not do this, reset your password and contact support at once.'
  ])
}
